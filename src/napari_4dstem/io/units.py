"""Unit names as files write them -> the units of :class:`~napari_4dstem.Calibration`.

Anything not recognised maps to ``None`` (unknown): a reader never guesses a unit.
"""
from __future__ import annotations

import math


def _clean(unit) -> str:
    if isinstance(unit, bytes):
        unit = unit.decode("utf-8", "replace")
    if unit is None:
        return ""
    u = str(unit).strip().strip("[]").replace(" ", "").replace("_", "")
    return u.replace("Å", "A").replace("\u212b", "A").replace("µ", "u").replace("μ", "u")


# length unit -> (our unit, factor to multiply the value by)
_LENGTH = {
    "A": ("Å", 1.0), "angstrom": ("Å", 1.0), "ang": ("Å", 1.0),
    "nm": ("nm", 1.0), "pm": ("Å", 0.01), "um": ("nm", 1000.0), "m": ("nm", 1e9),
}

# reciprocal / angular unit -> (our unit, factor)
_RECIPROCAL = {
    "1/A": ("1/Å", 1.0), "A^-1": ("1/Å", 1.0), "A-1": ("1/Å", 1.0), "A**-1": ("1/Å", 1.0),
    "1/nm": ("1/Å", 0.1), "nm^-1": ("1/Å", 0.1), "nm-1": ("1/Å", 0.1), "nm**-1": ("1/Å", 0.1),
    "mrad": ("mrad", 1.0), "mrads": ("mrad", 1.0), "rad": ("mrad", 1000.0),
}


def length(value, unit) -> tuple[float | None, str | None]:
    """A scan step in a file's unit -> ``(value, "Å" | "nm")`` or ``(None, None)`` when unknown."""
    key = _clean(unit)
    hit = _LENGTH.get(key) or _LENGTH.get(key.lower())
    v = _number(value)
    if hit is None or v is None:
        return None, None
    return v * hit[1], hit[0]


def reciprocal(value, unit) -> tuple[float | None, str | None]:
    """A detector pixel size -> ``(value, "1/Å" | "mrad")`` or ``(None, None)`` when unknown."""
    key = _clean(unit)
    hit = _RECIPROCAL.get(key) or _RECIPROCAL.get(key.lower())
    v = _number(value)
    if hit is None or v is None:
        return None, None
    return v * hit[1], hit[0]


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v) or v <= 0:
        return None
    return v


def pair(a: tuple, b: tuple) -> tuple[tuple, str | None]:
    """Combine the (value, unit) of the y and x axes; a unit mismatch or one unknown axis makes both unknown."""
    (va, ua), (vb, ub) = a, b
    # both or neither (docs/readers.md): a half-known pair is unknown
    if va is None or vb is None or ua is None or ub is None or ua != ub:
        return (None, None), None
    return (va, vb), ua
