"""The one worker registry of a viewer's session: every thread worker the GUI starts is started here.

Closing the viewer (or a dock) quits the workers and waits for them while Qt objects still exist: a worker
that finishes after its signals' QObject is deleted aborts the process ("wrapped C/C++ object of type
WorkerBaseSignals has been deleted").
"""
from __future__ import annotations

import time

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error

#: Workers of every registry (and of none), so that an application-wide close can wait for all of them.
_ALL: set = set()


def _message(e: BaseException) -> str:
    from ._common import toast_text

    return toast_text(e)


class WorkerRegistry:
    """Start, remember, stop and wait for thread workers; each may carry an ``owner`` tag (a dock)."""

    def __init__(self):
        self._workers: dict = {}  # worker -> owner

    def start(self, fn, *args, owner=None, on_error=None, connect: dict | None = None, **kwargs):
        """``create_worker(fn, *args, **kwargs)`` started and registered; errors become one notification.

        ``connect``: ``{signal name: slot}`` connected before the worker starts (none of its signals is missed).
        """
        w = create_worker(fn, *args, _ignore_errors=True, **kwargs)
        for sig, slot in (connect or {}).items():
            getattr(w, sig).connect(slot)
        self._workers[w] = owner
        _ALL.add(w)

        def errored(e):
            from napari_4dstem.errors import Cancelled

            if not isinstance(e, Cancelled):
                show_error(_message(e))
            if on_error is not None:
                on_error(e)

        w.errored.connect(errored)
        w.finished.connect(lambda: self._forget(w))
        w.start()
        return w

    def _forget(self, w):
        self._workers.pop(w, None)
        _ALL.discard(w)

    def running(self, owner=None) -> list:
        return [w for w, o in list(self._workers.items()) if owner is None or o is owner]

    def quit(self, owner=None) -> None:
        for w in self.running(owner):
            w.quit()

    def wait(self, timeout: float = 30.0, owner=None) -> bool:
        """Process events until the workers (of ``owner``) have finished; True when none is left."""
        return wait_for(self.running(owner), timeout)

    def stop(self, timeout: float = 30.0, owner=None) -> bool:
        self.quit(owner)
        return self.wait(timeout, owner)


def wait_for(workers, timeout: float = 30.0) -> bool:
    """Process Qt events until every worker in ``workers`` has finished (its ``finished`` slots ran)."""
    from qtpy.QtWidgets import QApplication

    workers = [w for w in workers if w is not None]
    t0 = time.perf_counter()
    while any(_is_running(w) for w in workers) and time.perf_counter() - t0 < timeout:
        QApplication.processEvents()
        time.sleep(0.005)
    for _ in range(3):  # let queued finished/returned slots run
        QApplication.processEvents()
    return not any(_is_running(w) for w in workers)


def _is_running(w) -> bool:
    # a worker counts as running until its finished signal was delivered (it is then forgotten)
    if w in _ALL:
        return True
    try:
        return bool(getattr(w, "is_running", False))
    except RuntimeError:
        return False


def start_worker(fn, *args, **kwargs):
    """A worker outside any session (warm-up imports): still known to :func:`stop_all`."""
    connect = kwargs.pop("connect", None) or {}
    w = create_worker(fn, *args, _ignore_errors=True, **kwargs)
    for sig, slot in connect.items():
        getattr(w, sig).connect(slot)
    _ALL.add(w)
    w.finished.connect(lambda: _ALL.discard(w))
    w.start()
    return w


def stop_all(timeout: float = 30.0) -> bool:
    for w in list(_ALL):
        w.quit()
    return wait_for(list(_ALL), timeout)
