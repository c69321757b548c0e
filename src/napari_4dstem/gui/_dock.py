"""The base of every dock: bound to the viewer's session, starts steps in the session's worker registry,
offers Run/Cancel buttons, and stops (and waits for) the viewer's workers when its window closes."""
from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QHBoxLayout, QSpinBox, QWidget

from ._common import OptionalFloat, run_steps_in_worker
from ._session import get_session

PLUGIN = "napari-4dstem"


class DockBase(QWidget):
    """A dock bound to the viewer's session; running workers stop when the dock goes away."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        registry, me = self.session.workers, self
        self.destroyed.connect(lambda *_: registry.quit(owner=me))
        # the dock sits in napari's main window once the event loop has run: watch that window's Close
        QTimer.singleShot(0, self._watch_window)

    def _watch_window(self):
        try:
            win = self.window()
        except RuntimeError:  # deleted already
            return
        if win is not self:
            CloseWatcher.on(win, self.on_window_close)
        short_tab_title(self)

    def on_window_close(self):
        """The viewer's window has closed: stop every running step of this viewer and wait for them
        (while their Qt objects still exist)."""
        from ._workers import stop_all

        self.session.stop_workers()
        stop_all()

    def stop_workers(self):
        self.session.workers.quit(owner=self)

    @property
    def _workers(self) -> list:
        return self.session.workers.running(owner=self)

    def event(self, ev):
        # removed from its dock (napari's dock close button): stop what this dock started
        if ev.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.stop_workers()
        return super().event(ev)

    def start(self, steps_factory, **kw):
        return run_steps_in_worker(self.session, steps_factory, owner=self, **kw)

    def start_cancellable(self, button, steps_factory, *, on_finish=None, **kw):
        """Run a step from ``button``: it reads "Cancel" while the step runs and quits it when pressed."""
        label = button.text()
        state = {}

        def finished():
            button.setText(label)
            button.clicked.disconnect(state["cancel"])
            button.clicked.connect(state["run"])
            if on_finish is not None:
                on_finish()

        w = self.start(steps_factory, on_finish=finished, **kw)
        state["run"] = getattr(button, "_run_slot", None)
        state["cancel"] = w.quit
        if state["run"] is not None:
            button.clicked.disconnect(state["run"])
        else:
            state["run"] = lambda *_: None
        button.clicked.connect(state["cancel"])
        button.setText("Cancel")
        return w

    def closeEvent(self, event):  # noqa: N802 - Qt name
        self.stop_workers()
        super().closeEvent(event)


class CanvasDock(DockBase):
    """A dock that owns a second napari canvas (``self.canvas``): closed with the dock or the main window."""

    canvas = None

    def on_window_close(self):
        super().on_window_close()
        self.close_canvas()

    def close_canvas(self):
        """Close the dock's canvas (also called when the main window closes)."""
        if self.canvas is not None:
            canvas, self.canvas = self.canvas, None
            try:
                canvas.close()
            except RuntimeError:  # deleted with the window already
                pass

    def closeEvent(self, event):  # noqa: N802 - Qt name
        self.close_canvas()
        super().closeEvent(event)



def short_tab_title(widget) -> None:
    """Tabs of tabified docks show the dock's title: "Data", not "Data (napari-4dstem)" cut to "Data (napari-…"."""
    from qtpy.QtWidgets import QDockWidget

    p = widget.parent()
    while p is not None and not isinstance(p, QDockWidget):
        p = p.parent()
    if p is not None:
        title = p.windowTitle()
        if " (" in title:
            p.setWindowTitle(title.split(" (", 1)[0])


class CloseWatcher(QObject):
    """Calls the registered callbacks once the watched window has accepted a Close event.

    napari may ask the user to confirm a close: this filter lets the window handle the event first and
    calls back only when the event was accepted (a cancelled close leaves training and the Inspector
    alone). One watcher per window, shared by its docks.
    """

    def __init__(self, parent):
        super().__init__(parent)
        self.callbacks: list = []

    @classmethod
    def on(cls, window, callback) -> CloseWatcher:
        watcher = getattr(window, "_napari_4dstem_close_watcher", None)
        if watcher is None:
            watcher = cls(window)
            window.installEventFilter(watcher)
            window._napari_4dstem_close_watcher = watcher
        watcher.callbacks.append(callback)
        return watcher

    def eventFilter(self, obj, event):  # noqa: N802 - Qt name
        if event.type() != QEvent.Type.Close:
            return False
        obj.event(event)  # the window's own handling (napari's confirm dialog), then we know the answer
        if event.isAccepted():
            for cb in list(self.callbacks):
                cb()
        return True  # handled: the window must not see this event twice


def _spin(lo, hi, value, step=1, special=None):
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    s.setSingleStep(step)
    if special:
        s.setSpecialValueText(special)
    return s


def run_button(button, slot):
    """Connect a Run button so that :meth:`DockBase.start_cancellable` can swap it for Cancel."""
    button._run_slot = lambda *_: slot()
    button.clicked.connect(button._run_slot)
    return button


def _pair():
    a, b = OptionalFloat(), OptionalFloat()
    row = QHBoxLayout()
    row.addWidget(a)
    row.addWidget(b)
    return a, b, row


