"""User-facing errors: the CLI prints them as one line and exits with code 2, no traceback."""
from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (unknown name, missing file, malformed field)."""

    exit_code = 2


class DataError(UserError):
    """Bad benchmark data; the message names the file and, where known, the field."""

    def __init__(self, path, message: str, field: str | None = None):
        self.path = str(path)
        self.field = field
        where = f"{self.path}" + (f" [{field}]" if field else "")
        super().__init__(f"{where}: {message}")
