"""Read and write CoNLL-style column files and JSON lines of tagged sentences.

CoNLL: one token a line, columns separated by spaces or tabs, the token first and the tag in a
configurable column (the last by default). ``-DOCSTART-`` lines start a new document; blank or
whitespace-only lines end a sentence. The tag ``?`` marks a word whose annotation is unknown
(partial annotation: it may or may not be part of an entity). JSON lines: ``{"tokens": [...], "tags": [...]}`` a line.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .schemes import spans_to_tags, split_tag

_COLUMN_SPLIT = re.compile(r"[ \t]+")
UNKNOWN_TAG = "?"  # CoNLL: a word whose annotation is unknown (partial annotation)


@dataclass
class Sentence:
    """One tagged sentence, with the document it belongs to and where it came from."""

    tokens: list[str]
    tags: list[str]
    doc_id: int = 0
    line: int = 0  # 1-based line of the first token in its file
    extra: dict = field(default_factory=dict)
    path: str = ""            # the file it was read from ("" when built in code or from the hub)
    one_line: bool = False    # the whole sentence on one line (JSON lines)
    # entity spans (type, start, end) as given by a span-annotated file; may nest or overlap.
    # Then ``tags`` are those spans in IOB2 when they do not overlap, else None
    spans: list[tuple[str, int, int]] | None = None
    # partial annotation: per word, whether its annotation is known (None: every word is);
    # an unknown word's tag is "O" in ``tags`` but means "not annotated", not "no entity"
    known: list[bool] | None = None

    def gold_spans(self, scheme: str) -> list[tuple[str, int, int]]:
        """The gold entities ``(type, start, end)``: the given spans, or the tags read in
        ``scheme``."""
        from .schemes import tags_to_spans

        return list(self.spans) if self.spans is not None else tags_to_spans(self.tags, scheme)

    def overlap(self) -> tuple[tuple[str, int, int], tuple[str, int, int]] | None:
        """The first two given spans that overlap (nested or crossing), or None."""
        if not self.spans:
            return None
        ordered = sorted(self.spans, key=lambda x: (x[1], -x[2]))
        for a, b in zip(ordered, ordered[1:]):
            if b[1] < a[2]:
                return a, b
        return None

    def where(self, token: int = 0) -> str:
        """``file:line`` of a token, for messages."""
        line = self.line if self.one_line else self.line + token
        return f"{self.path or '<data>'}:{line}"


def _open_text(path: str | os.PathLike, member: str | None = None) -> tuple[str, str]:
    """Return ``(text, display_name)``; ``member`` reads one file out of a zip archive."""
    path = Path(path)
    name = f"{path}!{member}" if member else str(path)
    if not path.exists():
        raise DataError("file not found", str(path))
    if path.is_dir():
        raise DataError("is a directory, expected a data file", str(path))
    try:
        if member is not None:
            with zipfile.ZipFile(path) as zf:
                raw = zf.read(member)
        else:
            raw = path.read_bytes()
    except (KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {member!r} from the archive: {exc}", str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                        "convert the file to UTF-8", name, line) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text, name


def read_conll(path: str | os.PathLike, *, tag_column: int = -1, member: str | None = None,
               token_transform: Callable[[str], str] | None = None) -> list[Sentence]:
    """Read a CoNLL column file.

    Args:
        path: the file (or a zip archive, with ``member``).
        tag_column: index of the tag column; negative counts from the end (default: last).
        member: a file inside the zip archive ``path``.
        token_transform: applied to each token (Weibo strips a word-segmentation digit).

    Raises:
        DataError: an empty file, a line with too few columns, or a tag that fits no scheme;
            the message names the file and line.
    """
    text, name = _open_text(path, member)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    doc_id, first_line = 0, 0
    need = max(2, tag_column + 1 if tag_column >= 0 else 1 - tag_column)

    unknown: list[int] = []

    def flush() -> None:
        nonlocal tokens, tags, unknown
        if tokens:
            sent = Sentence(tokens, tags, doc_id, first_line, path=name)
            if unknown:
                sent.known = [True] * len(tokens)
                for k in unknown:
                    sent.known[k] = False
            sentences.append(sent)
        tokens, tags, unknown = [], [], []

    for lineno, raw_line in enumerate(io.StringIO(text), start=1):
        line = raw_line.rstrip("\r\n")
        if not line.strip():
            flush()
            continue
        cols = _COLUMN_SPLIT.split(line.strip(" \t"))
        if cols[0] == "-DOCSTART-":
            flush()
            if sentences or doc_id:
                doc_id += 1
            continue
        if len(cols) < need:
            raise DataError(f"expected at least {need} columns (token ... tag), found {len(cols)}: "
                            f"{line.strip()!r}", name, lineno)
        tag = cols[tag_column]
        if tag == UNKNOWN_TAG:
            unknown.append(len(tokens))
            tag = "O"
        try:
            split_tag(tag)
        except ValueError as exc:
            raise DataError(f"{exc} (or {UNKNOWN_TAG!r} for a word whose annotation is unknown)",
                            name, lineno) from None
        token = cols[0] if token_transform is None else token_transform(cols[0])
        if not tokens:
            first_line = lineno
        tokens.append(token)
        tags.append(tag)
    flush()
    if not sentences:
        raise DataError("no sentences found (the file is empty or holds only blank and "
                        "-DOCSTART- lines)", name)
    return sentences


def read_jsonl(path: str | os.PathLike) -> list[Sentence]:
    """Read JSON lines of tagged sentences, ``{"tokens": [...], "tags": [...]}``, or of
    span-annotated ones, ``{"tokens": [...], "entities": [{"start": 0, "end": 3, "type":
    "ORG"}, ...]}`` (word indices, ``end`` exclusive; spans may nest or overlap). ``doc_id`` is
    optional.

    Raises:
        DataError: invalid JSON, a missing key, tags and tokens of different lengths, a tag that
            fits no scheme, or an entity that is not a non-empty span of the sentence's words
            with integer indices; the message names the file and line.
    """
    text, name = _open_text(path)
    sentences = []
    for lineno, line in enumerate(io.StringIO(text), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON ({exc.msg}, column {exc.colno})", name, lineno) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("tokens"), list) or not (
                isinstance(obj.get("tags"), list) or isinstance(obj.get("entities"), list)):
            raise DataError('expected an object {"tokens": [...], "tags": [...]} or {"tokens": '
                            '[...], "entities": [{"start": ..., "end": ..., "type": ...}]}',
                            name, lineno)
        toks = [str(t) for t in obj["tokens"]]
        doc = obj.get("doc_id", 0)
        if isinstance(doc, bool) or not isinstance(doc, int):
            raise DataError(f"doc_id must be an integer, got {doc!r}", name, lineno)
        partial = obj.get("partial", False)
        if not isinstance(partial, bool):
            raise DataError(f'"partial" must be true or false, got {json.dumps(partial)}',
                            name, lineno)
        if "entities" in obj:
            spans = _read_entities(obj["entities"], len(toks), name, lineno)
            if not toks:
                continue
            sent = Sentence(toks, [], doc, lineno, path=name, one_line=True, spans=spans)
            sent.tags = None if sent.overlap() else spans_to_tags(spans, len(toks), "iob2")
            if "known" in obj or partial:
                sent.known = _known_regions(obj.get("known", []), spans, len(toks), name, lineno)
            sentences.append(sent)
            continue
        if "known" in obj:
            raise DataError('"known" regions go with "entities"; with "tags", mark an unknown '
                            "word's tag null", name, lineno)
        tgs = obj["tags"]
        if len(toks) != len(tgs):
            raise DataError(f"{len(toks)} tokens but {len(tgs)} tags", name, lineno)
        if not toks:
            continue
        known = [t is not None and not (partial and t == "O") for t in tgs]
        tgs = ["O" if t is None else t for t in tgs]
        for tag in tgs:
            try:
                split_tag(str(tag))
            except ValueError as exc:
                raise DataError(f"{exc} (or null for a word whose annotation is unknown)", name,
                                lineno) from None
        sent = Sentence(toks, [str(t) for t in tgs], doc, lineno, path=name, one_line=True)
        if not all(known):
            sent.known = known
        sentences.append(sent)
    if not sentences:
        raise DataError("no sentences found (the file is empty)", name)
    return sentences


def _known_regions(regions, spans, n: int, name: str, lineno: int) -> list[bool]:
    """Per word, whether it is annotated: inside a ``"known"`` region ``[start, end)`` (fully
    annotated there) or inside an annotated entity."""
    known = [False] * n
    if not isinstance(regions, list):
        raise DataError('"known" must be a list of [start, end] word ranges', name, lineno)
    for k, r in enumerate(regions, start=1):
        if not (isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) and
                                                            not isinstance(x, bool) for x in r)
                and 0 <= r[0] < r[1] <= n):
            raise DataError(f"known region {k}: expected [start, end) word indices with "
                            f"0 <= start < end <= {n}, got {json.dumps(r)}", name, lineno)
        for w in range(r[0], r[1]):
            known[w] = True
    for _, s, e in spans:
        for w in range(s, e):
            known[w] = True
    return known


def _read_entities(entities: list, n: int, name: str, lineno: int) -> list[tuple[str, int, int]]:
    spans = []
    for k, ent in enumerate(entities, start=1):
        if not isinstance(ent, dict) or not {"start", "end", "type"} <= set(ent):
            raise DataError(f'entity {k}: expected {{"start": ..., "end": ..., "type": ...}}, '
                            f"got {json.dumps(ent)[:80]}", name, lineno)
        start, end, typ = ent["start"], ent["end"], ent["type"]
        for key, value in (("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise DataError(f"entity {k}: {key} must be an integer word index, got "
                                f"{json.dumps(value)}", name, lineno)
        if not isinstance(typ, str) or not typ or any(c.isspace() for c in typ):
            raise DataError(f"entity {k}: type must be a non-empty string without spaces, got "
                            f"{json.dumps(typ)}", name, lineno)
        if start >= end:
            raise DataError(f"entity {k} [{start}, {end}) {typ} is empty: end is exclusive and "
                            "must be greater than start", name, lineno)
        if start < 0 or end > n:
            raise DataError(f"entity {k} [{start}, {end}) {typ} lies outside the sentence of {n} "
                            "words", name, lineno)
        spans.append((typ, start, end))
    return spans


def write_conll(path: str | os.PathLike, sentences: Iterable[Sequence[Sequence[str]]]) -> None:
    """Write sentences given as rows of columns (``token gold pred``), a blank line after each."""
    with open(path, "w", encoding="utf-8") as fh:
        for rows in sentences:
            for cols in rows:
                fh.write(" ".join(cols) + "\n")
            fh.write("\n")
