"""One exception type for every problem a user can fix.

Workflow scripts catch :class:`CellfateError` and print its message as a single line, so a bad
input never ends in a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from os import PathLike


class CellfateError(Exception):
    """A problem with the user's input or configuration, described in one line."""

    def __init__(self, message: str, path: str | PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        text = " ".join(str(message).split())  # always one line
        super().__init__(f"{self.path}: {text}" if self.path else text)
