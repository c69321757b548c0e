"""npe2 sample data: the built-in graphene-with-a-vacancy simulation, opened like a file."""
from __future__ import annotations

from napari_4dstem.sample import make_sample

from ._layers import dataset_layers
from ._reader import attach_session


def graphene_vacancy():
    """Layer data (the navigator) of ``make_sample("graphene_vacancy")``; the dataset rides in metadata."""
    attach_session()
    return dataset_layers(make_sample())
