"""A reducer that takes its time (imported by the Dask workers of tests/test_distributed.py)."""
import time

import numpy as np

from napari_4dstem.executor import Buffer, Reducer


class SlowTotals(Reducer):
    """Per-frame totals (exact int64), ``delay`` seconds per block: a run long enough to lose a worker in."""

    def __init__(self, delay: float):
        self.delay = delay

    def buffers(self):
        return {"total": Buffer("nav", (), "int64")}

    def process(self, frames, bufs):
        time.sleep(self.delay)
        bufs["total"][:] = frames.sum(axis=(1, 2), dtype=np.int64)

    def finalize(self, bufs, info):
        return bufs["total"]
