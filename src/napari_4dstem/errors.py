"""The project's exceptions. Every message names the file (when there is one), the problem, and what to do."""
from __future__ import annotations


class FourDSTEMError(Exception):
    """Base class: an error a user can act on. The GUI shows its message as a notification."""

    def __init__(self, problem: str, *, path=None, hint: str | None = None):
        self.path = None if path is None else str(path)
        self.problem = problem
        self.hint = hint
        parts = []
        if self.path:
            parts.append(f"{self.path}: ")
        parts.append(problem)
        if hint:
            parts.append(f" -> {hint}")
        super().__init__("".join(parts))


class ReaderError(FourDSTEMError):
    """A file could not be read as 4D-STEM data (format, shape, truncation, missing option)."""


class DataError(FourDSTEMError):
    """The data or a parameter is unusable for an operation (NaN, wrong shape, bad parameter)."""


class ModelError(FourDSTEMError):
    """A model file is corrupt, from another version, or a model is used before training."""


class WriteError(FourDSTEMError):
    """A file could not be written (existing file, unwritable folder, full disk)."""


class Cancelled(FourDSTEMError):
    """A long operation stopped because the user asked it to."""

    def __init__(self, what: str = "operation"):
        super().__init__(f"{what} cancelled")
