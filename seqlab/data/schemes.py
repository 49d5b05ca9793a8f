"""Tag schemes: IOB1, IOB2, BIOES (also called IOBES) and BMES, read into spans and written back.

Spans are half-open ``(type, start, end)`` word ranges. Reading is lenient in the conlleval way
(the way seqeval's default mode reads): a ``B-`` always opens an entity and an ``I-`` opens one
when the previous tag is not of the same type, so IOB1 and IOB2 read identically and a stray
``I-`` after ``O`` is an entity, as it is in conlleval.
"""

from __future__ import annotations

from collections.abc import Sequence

Span = tuple[str, int, int]

SCHEMES = ("iob1", "iob2", "bioes", "bmes")
_PREFIXES = {
    "iob1": {"B", "I"},
    "iob2": {"B", "I"},
    "bioes": {"B", "I", "E", "S"},
    "bmes": {"B", "M", "E", "S"},
}


def split_tag(tag: str) -> tuple[str, str | None]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", None)``.

    Raises:
        ValueError: a tag that is neither ``O`` nor ``PREFIX-TYPE`` with a one-letter prefix.
    """
    if tag == "O":
        return "O", None
    if len(tag) >= 3 and tag[1] == "-" and tag[0] in "BIEMS" and tag[2:]:
        return tag[0], tag[2:]
    raise ValueError(f"tag {tag!r} fits no scheme: expected 'O' or PREFIX-TYPE with PREFIX one of "
                     "B, I, E, S, M (IOB1, IOB2, BIOES, BMES), e.g. 'B-PER'")


def detect_scheme(sentences: Sequence[Sequence[str]]) -> str:
    """Guess the scheme of tagged sentences.

    ``M-`` means BMES; ``E-`` or ``S-`` means BIOES; otherwise IOB1 when ``I-`` opens more
    entities than ``B-`` does (CoNLL-2003's files), else IOB2.
    """
    prefixes: set[str] = set()
    i_opens = b_opens = 0
    for tags in sentences:
        prev_type: str | None = None
        for tag in tags:
            prefix, typ = split_tag(tag)
            prefixes.add(prefix)
            if prefix == "I" and typ != prev_type:
                i_opens += 1
            elif prefix == "B" and typ != prev_type:
                b_opens += 1
            prev_type = typ
    if "M" in prefixes:
        return "bmes"
    if prefixes & {"E", "S"}:
        return "bioes"
    return "iob1" if i_opens > b_opens else "iob2"


def check_tags(tags: Sequence[str], scheme: str) -> None:
    """Raise ValueError on the first tag whose prefix the scheme does not have."""
    allowed = _PREFIXES[scheme]
    for tag in tags:
        prefix, _ = split_tag(tag)
        if prefix != "O" and prefix not in allowed:
            raise ValueError(f"tag {tag!r} has prefix {prefix}-, which scheme {scheme} does not "
                             f"use (expected one of {', '.join(sorted(allowed))}, or O)")


def tags_to_spans(tags: Sequence[str], scheme: str = "iob2") -> list[Span]:
    """Read tags into half-open spans, leniently (see the module docstring)."""
    spans: list[Span] = []
    start: int | None = None
    cur: str | None = None

    def close(end: int) -> None:
        nonlocal start, cur
        if cur is not None and start is not None:
            spans.append((cur, start, end))
        start, cur = None, None

    for i, tag in enumerate(tags):
        prefix, typ = split_tag(tag)
        if prefix == "M":  # BMES middle is BIOES inside
            prefix = "I"
        if prefix == "O":
            close(i)
        elif prefix in ("B", "S"):
            close(i)
            start, cur = i, typ
            if prefix == "S":
                close(i + 1)
        elif prefix == "I":
            if cur != typ:
                close(i)
                start, cur = i, typ
        elif prefix == "E":
            if cur != typ:
                close(i)
                start, cur = i, typ
            close(i + 1)
    close(len(tags))
    return spans


def spans_to_tags(spans: Sequence[Span], length: int, scheme: str = "iob2") -> list[str]:
    """Write spans as tags of ``scheme``. Spans must not overlap."""
    tags = ["O"] * length
    ordered = sorted(spans, key=lambda s: s[1])
    prev_end, prev_type = -1, None
    for typ, start, end in ordered:
        n = end - start
        if scheme == "iob2":
            tags[start:end] = [f"B-{typ}"] + [f"I-{typ}"] * (n - 1)
        elif scheme == "iob1":
            first = "B" if (prev_end == start and prev_type == typ) else "I"
            tags[start:end] = [f"{first}-{typ}"] + [f"I-{typ}"] * (n - 1)
        elif scheme in ("bioes", "bmes"):
            mid = "M" if scheme == "bmes" else "I"
            if n == 1:
                tags[start] = f"S-{typ}"
            else:
                tags[start:end] = [f"B-{typ}"] + [f"{mid}-{typ}"] * (n - 2) + [f"E-{typ}"]
        else:
            raise ValueError(f"unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}")
        prev_end, prev_type = end, typ
    return tags


def convert(tags: Sequence[str], source: str, target: str) -> list[str]:
    """Convert a tag sequence between schemes through its spans."""
    return spans_to_tags(tags_to_spans(tags, source), len(tags), target)


def label_set(entity_types: Sequence[str], scheme: str = "iob2") -> list[str]:
    """All tags of a scheme over the given types, ``O`` first, then by type."""
    prefixes = {"iob2": "BI", "iob1": "BI", "bioes": "BIES", "bmes": "BMES"}[scheme]
    return ["O"] + [f"{p}-{t}" for t in sorted(entity_types) for p in prefixes]
