"""Reading lines of text and writing outputs safely: shared by every task's CLI paths.

Output paths are checked before any work, and written through a temporary file renamed over the
target on success, so a failure half-way never leaves a truncated file under the asked name.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import SeqlabError


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n",
                    encoding="utf-8")


def iter_lines(files: list[str]) -> Iterator[tuple[str, str, int]]:
    """``(text, source, line number)`` for every line of the files (stdin without files), split
    on ``\\n`` only (a ``\\r\\n`` ending is accepted), one at a time.

    Raises:
        SeqlabError: a line that is not UTF-8, naming the source, line and byte offset.
    """
    for f in files or ["-"]:
        name, fh = ("<stdin>", sys.stdin.buffer) if f == "-" else (f, open(f, "rb"))
        try:
            offset = 0
            for lineno, raw in enumerate(fh, start=1):  # binary lines end at b"\n" only
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise SeqlabError(f"{name}:{lineno}: not UTF-8 (byte 0x{raw[exc.start]:02x} at "
                                      f"byte offset {offset + exc.start}); convert the input to "
                                      "UTF-8") from None
                offset += len(raw)
                if text.endswith("\n"):
                    text = text[:-1]
                    if text.endswith("\r"):
                        text = text[:-1]
                yield text, name, lineno
        finally:
            if fh is not sys.stdin.buffer:
                fh.close()


def blocks(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    block = []
    for item in items:
        block.append(item)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def check_input_files(files: Iterable[str]) -> None:
    for f in files:
        if not Path(f).is_file():
            raise SeqlabError(f"{f}: file not found")


def check_output_file(path: str | os.PathLike | None, what: str = "--output") -> Path | None:
    """Fail before any work on an output file that cannot be written: its directory missing,
    a regular file where a directory should be, or a directory in its place."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise SeqlabError(f"{what} {path}: is a directory, expected a file name")
    parent = p.parent
    for up in [parent, *parent.parents]:
        if up.exists() and not up.is_dir():
            raise SeqlabError(f"{what} {path}: {up} is a file, not a directory")
    if not parent.is_dir():
        raise SeqlabError(f"{what} {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise SeqlabError(f"{what} {path}: the directory {parent} is not writable")
    return p


class AtomicOutput:
    """Write to ``path`` through a temporary file beside it, renamed over it on success: a
    failure half-way leaves any earlier file of that name as it was. Without a path, stdout."""

    def __init__(self, path: Path | None):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.partial") if path else None

    def __enter__(self):
        self.fh = open(self.tmp, "w", encoding="utf-8") if self.tmp else sys.stdout
        return self.fh

    def __exit__(self, exc_type, *_):
        if self.tmp is None:
            self.fh.flush()
            return False
        self.fh.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
        return False


def evaluate_output(args, name: str, ext: str) -> Path:
    """Where `seqlab evaluate` writes its predictions: ``--output``, else
    ``predictions_<run>_<name>.<ext>`` in the current directory (never into the trained run),
    checked before any work."""
    path = args.output or f"predictions_{Path(args.model_dir).resolve().name}_{name}.{ext}"
    return check_output_file(path)
