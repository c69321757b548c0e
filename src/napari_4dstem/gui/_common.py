"""Small pieces shared by the docks: running a core ``iter_*`` step in a worker, a dark plot canvas, fields."""
from __future__ import annotations

import time

import numpy as np

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from napari.utils.notifications import show_error
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QLineEdit, QProgressBar, QSizePolicy

from napari_4dstem.errors import FourDSTEMError

BG = "#262930"  # napari's dark theme background
FG = "#d1d2d4"


def error_message(e: BaseException) -> str:
    """The core's message for our errors; type and message for anything else."""
    return str(e) if isinstance(e, FourDSTEMError) else f"{type(e).__name__}: {e}"


#: Characters of a toast's first line that stay visible without expanding it (napari elides the rest).
TOAST_LINE = 110


def toast_text(e: BaseException) -> str:
    """A notification text whose first line (the only one a toast shows) ends with the hint.

    ``file: problem -> hint`` becomes ``problem (shortened) -> hint``, with the file's name only; the whole
    message follows on the next line for the expanded toast.
    """
    if not isinstance(e, FourDSTEMError) or not e.hint:
        return error_message(e)
    import os

    head = f"{os.path.basename(e.path)}: " if e.path else ""
    room = max(20, TOAST_LINE - len(head) - len(e.hint) - 3)
    problem = e.problem if len(e.problem) <= room else e.problem[:room - 1].rstrip() + "…"
    return f"{head}{problem} → {e.hint}\n{e}"


def notify_error(e: BaseException) -> None:
    show_error(toast_text(e))


def alive(widget) -> bool:
    """False once Qt has deleted the widget (a worker may finish after its dock or viewer closed)."""
    try:
        widget.objectName()
        return True
    except RuntimeError:
        return False


def guarded(owner, fn):
    """``fn`` as a slot that does nothing once ``owner`` (a widget) is deleted."""
    def slot(*args):
        if owner is None or alive(owner):
            return fn(*args)
        return None
    return slot


def run_steps_in_worker(session, steps_factory, *, on_return, on_progress=None, progress_bar=None,
                        on_finish=None, on_error=None, owner=None):
    """Run ``result = yield from steps_factory()`` in a worker of the session's registry.

    ``steps_factory`` builds the core's ``iter_*`` generator (it runs in the worker thread). Each
    yielded ``Progress`` updates ``progress_bar`` (with an ETA) and calls ``on_progress`` in the GUI
    thread; ``on_return(result)`` also runs in the GUI thread, so it may touch layers. ``worker.quit()``
    stops the step at its next yield (the bar then says "cancelled"). Errors become notifications.
    """
    def job():
        result = yield from steps_factory()
        return result

    t0 = [time.perf_counter()]
    state = {"returned": False, "failed": False}

    def yielded(p):
        if progress_bar is not None and getattr(p, "total", 0):
            set_progress(progress_bar, p.done, p.total, time.perf_counter() - t0[0], p.message)
        if on_progress is not None:
            on_progress(p)

    def returned(r):
        state["returned"] = True
        on_return(r)

    def errored(e):
        state["failed"] = True
        if progress_bar is not None and alive(progress_bar):
            progress_bar.setFormat("failed")
        if on_error is not None:
            on_error(e)

    def finished():
        if progress_bar is not None and alive(progress_bar) and not state["returned"] and not state["failed"]:
            progress_bar.setFormat("cancelled")
        if on_finish is not None:
            on_finish()

    if progress_bar is not None:
        progress_bar._last_repaint = None
        progress_bar.setValue(0)
        progress_bar.setFormat("starting…")
    return session.workers.start(job, owner=owner, on_error=guarded(owner, errored),
                                 connect={"yielded": guarded(owner, yielded), "returned": guarded(owner, returned),
                                          "finished": guarded(owner, finished)})


#: Seconds between progress-bar repaints. QProgressBar.setValue repaints synchronously, and with the
#: OpenGL canvases in the same window that recomposes the whole window (100-200 ms under a software
#: renderer while torch trains): progress yields at 5 Hz made the event loop stall.
PROGRESS_REPAINT_S = 1.0


def set_progress(bar: QProgressBar, done: int, total: int, elapsed: float, message: str = "",
                 force: bool = False):
    """Show ``done``/``total`` with an ETA; at most once per ``PROGRESS_REPAINT_S`` unless finished or ``force``."""
    now = time.perf_counter()
    last = getattr(bar, "_last_repaint", None)
    if not force and last is not None and now - last < PROGRESS_REPAINT_S and 0 < done < total:
        return
    bar._last_repaint = now
    eta = ""
    if 0 < done < total:
        left = elapsed / done * (total - done)
        eta = f" · ETA {int(left // 60)}:{int(left % 60):02d}"
    # QProgressBar.setValue repaints at once (a whole-window composite of the GL canvases under a software
    # renderer); with updates disabled meanwhile the bar is repainted once, with the window's next paint
    bar.setUpdatesEnabled(False)
    try:
        bar.setMaximum(max(int(total), 1))
        bar.setValue(int(done))
        bar.setFormat(f"{done}/{total}{eta}")
        bar.setToolTip(message)
    finally:
        bar.setUpdatesEnabled(True)


def progress_bar() -> QProgressBar:
    bar = QProgressBar()
    bar.setTextVisible(True)
    bar.setFormat("idle")
    bar.setValue(0)
    return bar


class AsyncPlot(QLabel):
    """A matplotlib plot drawn off the GUI thread, themed like napari's dark theme.

    ``plot(draw, *args)`` renders ``draw(figure, *args)`` with Agg in a thread worker and shows the
    image when it is done (the latest request wins), so a slow draw never stalls the event loop.
    """

    def __init__(self, height_px: int = 170):
        super().__init__()
        self.setMinimumHeight(height_px)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(height_px)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._seq = 0
        self._last = None
        self.rendered = 0  # images shown so far (tests wait on it)

    def plot(self, draw, *args):
        self._last = (draw, args)
        self._seq += 1
        seq = self._seq
        w, h, ratio = max(self.width(), 320), self.height(), float(self.devicePixelRatioF())
        from ._workers import start_worker

        return start_worker(_render, draw, args, w, h, ratio, connect={
            "returned": guarded(self, lambda rgba: self._show(seq, rgba, ratio)),
            "errored": lambda e: show_error(f"plot: {error_message(e)}")})

    def _show(self, seq, rgba, ratio):
        if seq != self._seq:
            return
        h, w = rgba.shape[:2]
        img = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
        pm = QPixmap.fromImage(img)
        pm.setDevicePixelRatio(ratio)
        self.setPixmap(pm)
        self.rendered += 1

    def resizeEvent(self, event):  # noqa: N802 - Qt name
        super().resizeEvent(event)
        if self._last is not None and event.oldSize().width() != event.size().width():
            self.plot(self._last[0], *self._last[1])


def _render(draw, args, w: int, h: int, ratio: float) -> np.ndarray:
    # a private Figure with the Agg canvas: safe in a worker thread (no pyplot, nothing shared)
    fig = Figure(figsize=(w / 100, h / 100), dpi=100 * ratio, facecolor=BG, layout="constrained")
    FigureCanvasAgg(fig)
    draw(fig, *args)
    for ax in fig.axes:
        style_axes(ax)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def style_axes(ax):
    ax.set_facecolor(BG)
    ax.tick_params(colors=FG, labelsize=7)
    for s in ax.spines.values():
        s.set_color(FG)
    ax.xaxis.label.set_color(FG)
    ax.yaxis.label.set_color(FG)
    ax.xaxis.label.set_size(8)
    ax.yaxis.label.set_size(8)
    ax.title.set_color(FG)
    ax.title.set_size(8)


def legend(ax):
    leg = ax.legend(fontsize=6, facecolor=BG, edgecolor=FG, labelcolor=FG)
    return leg


class OptionalFloat(QLineEdit):
    """A number field where blank means unknown (None)."""

    def __init__(self, value=None, placeholder="unknown"):
        super().__init__()
        self.setPlaceholderText(placeholder)
        self.set(value)

    def set(self, value):
        self.setText("" if value is None else f"{float(value):.6g}")

    def get(self) -> float | None:
        t = self.text().strip()
        if not t:
            return None
        try:
            return float(t)
        except ValueError:
            raise FourDSTEMError(f"{t!r} is not a number", hint="type a number or leave the field blank") from None


def update_image(layer, image: np.ndarray) -> None:
    """Put ``image`` into an image layer in place (same shape and dtype: copy and refresh, which skips
    napari's dims update and keeps clicks fast); otherwise replace the layer's data.

    The in-place refresh skips the extent (unchanged) and the thumbnail: callers set the contrast limits next,
    which redraws the thumbnail once (each thumbnail is a scipy zoom, about a third of a click's time).
    """
    current = layer.data
    if (isinstance(current, np.ndarray) and current.flags.writeable and current.shape == image.shape
            and current.dtype == image.dtype):
        current[...] = image
        layer.refresh(thumbnail=False, extent=False, highlight=False)
    else:
        layer.data = np.array(image, copy=True)


def replace_data(layer, data: np.ndarray, contrast_limits=None) -> None:
    """New data of the same shape for a map layer, at the least cost for the canvas.

    The layer's own array (``owned`` in our metadata, see ``Session._insert_maps``) is overwritten in place;
    a hidden layer is not re-sliced then (napari's refresh skips it; showing it re-slices) and its thumbnail
    event is held back, so updating a hidden map repaints nothing. Otherwise the data are replaced by a copy.
    """
    from ._layers import META_KEY

    meta = layer.metadata.setdefault(META_KEY, {})
    data = np.asarray(data)
    current = layer.data
    if (meta.get("owned") and isinstance(current, np.ndarray) and current.flags.writeable
            and current.shape == data.shape and current.dtype == data.dtype):
        current[...] = data
        if layer.visible:
            layer.refresh(extent=False)
    else:
        layer.data = np.array(data, copy=True)
        meta["owned"] = True
    from contextlib import nullcontext

    if contrast_limits is None:  # from the data: napari's reset uses the slice, stale while hidden
        finite = data[np.isfinite(data)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        contrast_limits = (lo, hi if hi > lo else lo + 1.0)
    with layer.events.thumbnail.blocker() if not layer.visible else nullcontext():
        layer.contrast_limits_range = contrast_limits
        layer.contrast_limits = contrast_limits


def nice_limits(lo: float, hi: float, digits: int = 2) -> tuple[float, float]:
    """``lo`` rounded down and ``hi`` up to ``digits`` significant digits of the range (never narrower)."""
    import math

    lo, hi = float(lo), float(hi)
    if not hi > lo:
        return lo, lo + (abs(lo) * 1e-6 or 1e-12)
    step = 10.0 ** (math.floor(math.log10(hi - lo)) - digits + 1)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step


def set_limits(layer, lo: float, hi: float, keep_close: bool = False, keep_fraction: float = 0.7) -> None:
    """Set contrast limits only when they change (rounded outward): each change redraws the layer's colourbar,
    which was most of a click's time. ``keep_close``: keep the current limits while they hold the new range and
    it spans at least ``keep_fraction`` of them (scrubbing through similar patterns redraws no colourbar)."""
    a, b = (float(v) for v in layer.contrast_limits)
    if keep_close and a <= lo and hi <= b and (hi - lo) >= keep_fraction * (b - a):
        return
    if keep_close:  # a margin, so that the next similar pattern keeps these limits (and the colourbar)
        lo, hi = lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)
    lim = nice_limits(lo, hi)
    if (a, b) != lim:
        layer.contrast_limits = lim
