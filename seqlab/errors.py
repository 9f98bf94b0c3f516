"""User-facing errors. Anything a user can cause raises a `SeqlabError`; the CLI prints it on one
line and exits 2. A traceback means a bug in seqlab, never a user mistake."""

from __future__ import annotations

import os


class SeqlabError(Exception):
    """Base class for errors a user can cause. `str(err)` is the one line the CLI prints:
    ``path:line: message`` when a location is known."""

    exit_code = 2

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        return f"{where}{self.message}".replace("\n", " ")


class DataError(SeqlabError):
    """A data file is missing, unreadable or malformed."""


class ImageTooLarge(DataError):
    """An image whose header announces more pixels than the limit: refused before decoding."""


class LabelError(DataError):
    """A label at evaluation/prediction time that the model was never trained on."""


class ConfigError(SeqlabError):
    """An unknown key, a value of the wrong type, or an impossible combination of options."""


class CheckpointError(SeqlabError):
    """A run directory or checkpoint that is missing, corrupted, unsafe or from another version."""


class TrainingError(SeqlabError):
    """Training cannot go on: a non-finite loss or gradient (the diagnostic names step and parameter)."""


class Interrupted(SeqlabError):
    """SIGTERM/SIGINT during training: the current step finished and a checkpoint was written.
    Exit code 3 tells a scheduler the run can be resumed with `seqlab train --resume RUN_DIR`."""

    exit_code = 3
