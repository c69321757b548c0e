"""The napari GUI: reader, sample data, dock widgets and the demo. The only code that imports napari and Qt.

State shared by the docks of one viewer lives in :class:`~napari_4dstem.gui._session.Session`.
"""
