"""Errors a user can act on (the CLI prints them as one line and exits with status 2), and
which process of a launch says a note to the user."""

from __future__ import annotations

import os


class SeqlabError(Exception):
    """Base class of every error caused by input (files, configs, arguments), not by a bug."""


class ConfigError(SeqlabError, ValueError):
    """A configuration key or value that does not fit; the message names the key."""


class DataError(SeqlabError, ValueError):
    """A data file that cannot be read as expected; the message names the file and line."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


def first_process() -> bool:
    """Whether this is the first (or only) process of a launch. Under ``torchrun`` or
    ``accelerate launch`` every process reads the same data, so a note about the data is said by
    the first one only; the launchers set ``RANK`` before any seqlab code runs."""
    return os.environ.get("RANK", "0") == "0"
