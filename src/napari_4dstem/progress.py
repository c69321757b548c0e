"""Progress and cancel for every slow step, without any GUI.

A slow operation is written once as a generator ``iter_*`` that yields :class:`Progress` and
returns its result. Python code calls the plain function (which runs the generator);
napari's ``thread_worker`` does ``result = yield from iter_*(...)``, so every yield advances the
progress bar and is a point where ``worker.quit()`` takes effect.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import Cancelled

T = TypeVar("T")


@dataclass
class Progress:
    done: int
    total: int
    message: str = ""
    info: dict = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


Steps = Generator[Progress, None, T]


def watch_steps(
    steps: Steps,
    callback: Callable[[Progress], Any] | None = None,
    cancel: threading.Event | None = None,
    what: str = "operation",
) -> Steps:
    """Pass the steps through, calling ``callback`` on each and stopping at the first one after
    ``cancel`` is set (the generator is closed and :class:`Cancelled` raised); returns the result."""
    try:
        while True:
            p = next(steps)
            if callback is not None:
                callback(p)
            if cancel is not None and cancel.is_set():
                steps.close()
                raise Cancelled(what)
            yield p
    except StopIteration as stop:
        return stop.value


def run_steps(
    steps: Steps,
    callback: Callable[[Progress], Any] | None = None,
    cancel: threading.Event | None = None,
    what: str = "operation",
):
    """Drive a step generator to the end and return its result.

    ``callback`` receives every :class:`Progress`; if ``cancel`` is set, the generator is closed
    at the next step and :class:`Cancelled` is raised.
    """
    watched = watch_steps(steps, callback, cancel, what)
    try:
        while True:
            next(watched)
    except StopIteration as stop:
        return stop.value
