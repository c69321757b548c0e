"""npe2 sample data: the built-in graphene-with-a-vacancy simulation, opened like a file."""
from __future__ import annotations

from napari_4dstem.sample import make_sample

from ._reader import _attach_session, dataset_layers


def graphene_vacancy():
    """Layer data (navigator + pattern) of ``make_sample("graphene_vacancy")``; the dataset rides in metadata."""
    _attach_session()
    return dataset_layers(make_sample())
