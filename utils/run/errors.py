"""Errors that mean "the user gave us something we cannot use": scripts turn them into one line and
exit status 2 (`utils.run.progress.run_entry_point`); anything else is a bug and keeps its trace."""
from __future__ import annotations

# A JSON file nested deeper than Python's recursion limit (`[[[[...]]]]`): no data file is.
JSON_TOO_DEEP = "JSON nested too deeply to be a data file"


class ToolkitError(Exception):
    """A user-facing error: bad input, a missing file, an unknown name, an unusable checkpoint."""


class DataError(ToolkitError):
    """A data file, or one record in it, cannot be read as the task requires. The message starts
    with 'FILE: record R: field F: ' (the parts that are known), so the user can open the file at
    the right place."""

    def __init__(self, message: str, *, file: str | None = None, record: str | int | None = None,
                 field: str | None = None) -> None:
        parts = [str(file) if file is not None else None, f"record {record}" if record is not None else None,
                 f"field '{field}'" if field is not None else None]
        super().__init__("".join(f"{part}: " for part in parts if part is not None) + message)


class UnknownTaskError(ToolkitError):
    """A task name that is not in the registry."""


class CheckpointError(ToolkitError):
    """A checkpoint folder that is missing, incomplete, or would lose weights when loaded."""


class HubUnavailableError(ToolkitError):
    """A Hugging Face Hub name was given but the Hub cannot be reached (or offline mode is on)."""


class DiskFullError(ToolkitError):
    """A write ran out of disk space or quota; the message says how much was needed."""
