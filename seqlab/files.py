"""Reading text and writing outputs safely: every file seqlab writes goes through here.

Output paths are checked before any work, and written through a temporary file renamed over the
target on success, so a failure half-way never leaves a truncated file under the asked name.
JSON is strict (a non-finite number is written as null and named) and never holds a raw line or
paragraph separator (U+2028, U+2029, U+0085), which readers that split on Unicode line breaks
(Python's ``str.splitlines``, JavaScript) would take for the end of a line.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import SeqlabError

_LINE_BREAKS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\u0085": "\\u0085"}


def open_text(path: str | os.PathLike):
    """A UTF-8 text file to read, gzipped or not (by its ``.gz`` suffix): the one opener of the
    predictions files the runs write and the study, the report and evaluate read back."""
    import gzip

    path = Path(path)
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else \
        open(path, encoding="utf-8")


def finite_json(obj, path: str = ""):
    """``obj`` with every NaN or infinity replaced by None, and the dotted paths replaced."""
    replaced: list[str] = []

    def walk(x, where):
        if isinstance(x, float) and not math.isfinite(x):
            replaced.append(where or "value")
            return None
        if isinstance(x, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(x)]
        return x

    return walk(obj, path), replaced


def dumps(obj, *, indent: int | None = None) -> str:
    """Strict JSON text of ``obj`` (non-finite numbers as null), UTF-8 characters kept but the
    three Unicode line breaks escaped."""
    clean, _ = finite_json(obj)
    text = json.dumps(clean, indent=indent, ensure_ascii=False, allow_nan=False)
    for raw, escaped in _LINE_BREAKS.items():
        text = text.replace(raw, escaped)
    return text


def dumps_line(obj) -> str:
    """One JSON line (JSON lines), newline included."""
    return dumps(obj) + "\n"


def write_text(path: Path, text: str) -> None:
    """``text`` to ``path`` through a temporary file beside it, renamed over it when complete."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, obj, *, indent: int | None = 2) -> None:
    """Strict JSON to ``path`` atomically; the dotted paths of non-finite numbers written as
    null are listed under ``nonfinite_as_null`` when ``obj`` is a mapping."""
    clean, replaced = finite_json(obj)
    if replaced and isinstance(clean, dict):
        clean["nonfinite_as_null"] = replaced
    write_text(path, dumps(clean, indent=indent) + "\n")


def read_text_file(path: str | os.PathLike, *, what: str = "input") -> str:
    """A UTF-8 text file's content.

    Raises:
        SeqlabError: not found, a directory, unreadable, or not UTF-8 (with the line and byte
            offset of the first bad byte).
    """
    p = Path(path)
    if not p.exists():
        raise SeqlabError(f"{what} {path}: file not found")
    if p.is_dir():
        raise SeqlabError(f"{what} {path}: is a directory, expected a file")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise SeqlabError(f"{what} {path}: cannot be read ({exc.strerror})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SeqlabError(f"{what} {path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at byte "
                          f"offset {exc.start}); convert the file to UTF-8") from None


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
    """Every input file exists, is a file, can be read and is UTF-8 throughout (read once, in
    blocks: memory stays flat), before any model is loaded.

    Raises:
        SeqlabError: the first problem, with the file (and line and byte offset).
    """
    import codecs

    for f in files:
        p = Path(f)
        if not p.exists():
            raise SeqlabError(f"{f}: file not found")
        if p.is_dir():
            raise SeqlabError(f"{f}: is a directory, expected a text file")
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = lines = 0
        try:
            with open(p, "rb") as fh:
                while block := fh.read(1 << 20):
                    try:
                        decoder.decode(block)
                    except UnicodeDecodeError as exc:
                        # the decoder may hold up to 3 bytes of a character from the last block
                        start = max(0, exc.start - len(exc.object) + len(block))
                        bad = offset + start
                        line = lines + block[:start].count(b"\n") + 1
                        raise SeqlabError(f"{f}:{line}: not UTF-8 (byte 0x{block[start]:02x} at "
                                          f"byte offset {bad}); convert the input to "
                                          "UTF-8") from None
                    offset += len(block)
                    lines += block.count(b"\n")
                decoder.decode(b"", final=True)
        except OSError as exc:
            raise SeqlabError(f"{f}: cannot be read ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise SeqlabError(f"{f}: not UTF-8 (the file ends inside a character); convert "
                              "the input to UTF-8") from None


def check_output_dir(path: str | os.PathLike, what: str = "--output") -> Path:
    """Fail before any work on an output directory that cannot be made: a file in its place or
    in the place of a parent, or no writable directory above it."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise SeqlabError(f"{what} {path}: is a file, expected a directory (or a new name)")
    for up in p.parents:
        if up.exists():
            if not up.is_dir():
                raise SeqlabError(f"{what} {path}: {up} is a file, not a directory")
            if not os.access(up, os.W_OK):
                raise SeqlabError(f"{what} {path}: the directory {up} is not writable")
            break
    return p


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


def evaluate_output(output: str | None, run_dir: Path, name: str, ext: str) -> Path:
    """Where `seqlab evaluate` writes its predictions: ``--output``, else
    ``predictions_<run>_<name>.<ext>`` in the current directory (never into the trained run),
    checked before any work."""
    path = output or f"predictions_{Path(run_dir).resolve().name}_{name}.{ext}"
    return check_output_file(path)
