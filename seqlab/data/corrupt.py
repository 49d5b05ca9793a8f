"""Synthetic missing entities (``seqlab corrupt``): each training entity removed with probability
``p`` under a seed, written as partial annotation or as complete but wrong data.

The draw walks the sentences in order and each sentence's entities by position, one
``random.Random(seed)`` draw an entity, so the same input, ``p`` and seed give the same file
byte for byte. ``partial`` writes ``{"tokens", "entities", "partial": true}`` (the kept
entities; every other word unknown, as in distant supervision); ``wrong`` writes the kept
entities as if the annotation were complete (a removed entity's words are ``O``), the setting
that trains on the missing entities as negatives (Li et al., 2021).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..files import AtomicOutput, dumps_line


def corrupt(sentences, scheme: str, *, p: float, seed: int, mode: str = "partial"
            ) -> tuple[list[dict], dict]:
    """The sentences with each entity kept with probability ``1 - p``; the rows to write and
    what was done (``entities``, ``removed``)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if mode not in ("partial", "wrong"):
        raise ValueError(f"mode must be partial or wrong, got {mode!r}")
    rng = random.Random(seed)
    rows, total, removed = [], 0, 0
    for s in sentences:
        kept = []
        for typ, a, b in sorted(s.gold_spans(scheme), key=lambda x: (x[1], x[2], x[0])):
            total += 1
            if rng.random() < p:
                removed += 1
            else:
                kept.append({"start": a, "end": b, "type": typ})
        row = {"tokens": list(s.tokens), "entities": kept}
        if mode == "partial":
            row["partial"] = True
        if s.doc_id:
            row["doc_id"] = s.doc_id
        rows.append(row)
    return rows, {"entities": total, "removed": removed}


def remove_entities(sentences, scheme: str, *, p: float, seed: int, partial: bool
                    ) -> tuple[list, dict]:
    """The training sentences as :func:`corrupt` makes them (``data.remove_entities``), as the
    JSON lines reader reads back what ``seqlab corrupt`` writes: the kept entities as spans,
    and with ``partial`` every word outside them unknown."""
    from dataclasses import replace

    from .schemes import spans_to_tags

    rows, stats = corrupt(sentences, scheme, p=p, seed=seed, mode="partial" if partial else "wrong")
    out = []
    for s, row in zip(sentences, rows):
        spans = [(e["type"], e["start"], e["end"]) for e in row["entities"]]
        n = len(s.tokens)
        known = None
        if partial:
            known = [False] * n
            for _, a, b in spans:
                known[a:b] = [True] * (b - a)
        out.append(replace(s, tags=spans_to_tags(spans, n, "iob2"), spans=spans, known=known))
    return out, stats


def write_corrupted(rows: list[dict], stats: dict, output: str | Path, provenance: dict) -> Path:
    """The rows as JSON lines at ``output``, and ``output`` + ``.json`` saying how they were
    made (source, p, seed, mode, counts)."""
    out = Path(output)
    with AtomicOutput(out) as fh:
        for row in rows:
            fh.write(dumps_line(row))
    out.with_name(out.name + ".json").write_text(
        json.dumps({**provenance, **stats, "sentences": len(rows)}, indent=2) + "\n",
        encoding="utf-8")
    return out
