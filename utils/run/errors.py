"""Errors that mean "the user gave us something we cannot use".

Scripts turn these into a one-line message and a non-zero exit (see `utils.run.cli.run_entry_point`);
anything else is a bug and keeps its stack trace.
"""
from __future__ import annotations

# The message of a JSON file whose nesting exceeds Python's recursion limit while it is parsed
# (e.g. `[[[[...]]]]` thousands deep): no data file of ours is nested like that.
JSON_TOO_DEEP = "JSON nested too deeply to be a data file"


class ToolkitError(Exception):
    """A user-facing error: bad input, a missing file, an unknown name, an unusable checkpoint."""


class DataError(ToolkitError):
    """A data file, or one record in it, cannot be read as the task requires.

    The message names the file, the record (its id or position) and the field, so the user can
    open the file at the right place.
    """

    def __init__(self, message: str, *, file: str | None = None, record: str | int | None = None,
                 field: str | None = None) -> None:
        self.file = file
        self.record = record
        self.field = field
        self.detail = message
        super().__init__(format_location(file, record, field) + message)


def format_location(file: str | None, record: str | int | None, field: str | None) -> str:
    """'FILE: record R: field F: ' with the parts that are known, in that order."""
    parts = []
    if file is not None:
        parts.append(str(file))
    if record is not None:
        parts.append(f"record {record}")
    if field is not None:
        parts.append(f"field '{field}'")
    return "".join(part + ": " for part in parts)


class UnknownTaskError(ToolkitError):
    """A task name that is not in the registry."""


class CheckpointError(ToolkitError):
    """A checkpoint folder that is missing, incomplete, or would lose weights when loaded."""


class HubUnavailableError(ToolkitError):
    """A Hugging Face Hub name was given but the Hub cannot be reached (or offline mode is on)."""


class DiskFullError(ToolkitError):
    """A write ran out of disk space or quota; the message says how much was needed."""
