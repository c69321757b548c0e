"""Event-loop probe: a QTimer that measures how late the GUI thread serves it (the longest stall)."""
from __future__ import annotations

import time

from qtpy.QtCore import QObject, QTimer


class EventLoopProbe(QObject):
    """Fires every ``interval_ms``; ``max_stall_ms`` is the longest extra delay seen (0 = perfectly smooth).

    Use it around an operation: ``probe.start()``, run the event loop, ``probe.stop()``, then read
    ``max_stall_ms`` and ``stalls`` (every delay over ``threshold_ms``).
    """

    def __init__(self, interval_ms: int = 10, threshold_ms: float = 100.0, parent=None):
        super().__init__(parent)
        self.interval_ms = interval_ms
        self.threshold_ms = threshold_ms
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self.reset()

    def reset(self):
        self.max_stall_ms = 0.0
        self.stalls: list[float] = []
        self.stall_times: list[float] = []  # time.perf_counter() at the end of each stall
        self.delays: list[float] = []  # every tick's extra delay (ms), for percentiles
        self.tick_times: list[float] = []
        self.ticks = 0
        self._last = None

    def start(self):
        self.reset()
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self):
        self._timer.stop()

    def _tick(self):
        now = time.perf_counter()
        if self._last is not None:
            stall = (now - self._last) * 1000.0 - self.interval_ms
            self.max_stall_ms = max(self.max_stall_ms, stall)
            self.delays.append(stall)
            self.tick_times.append(now)
            if stall > self.threshold_ms:
                self.stalls.append(stall)
                self.stall_times.append(now)
        self._last = now
        self.ticks += 1

    def stalls_between(self, t0: float, t1: float) -> list[float]:
        """Stalls (ms) that ended between two ``time.perf_counter()`` times."""
        return [ms for ms, t in zip(self.stalls, self.stall_times) if t0 <= t <= t1]

    def delays_between(self, t0: float, t1: float) -> list[float]:
        """Every tick's extra delay (ms) for ticks between two ``time.perf_counter()`` times."""
        return [ms for ms, t in zip(self.delays, self.tick_times) if t0 <= t <= t1]
