"""NER errors by the SemEval-2013 categories (Segura-Bedmar et al., 2013; the ``nervaluate``
package), per entity, so that a report can show and filter each one.

Each predicted entity is matched with the gold entities of its sentence:

* ``exact``: a gold entity with the same boundaries and type;
* ``type``: the same boundaries, another type;
* ``boundary``: overlapping boundaries, the same type;
* ``boundary+type``: overlapping, another type and other boundaries;
* ``spurious``: no gold entity overlaps it;

and every gold entity left unmatched is ``missed``; each gold entity is matched once, as
nervaluate's strict scheme matches them (:func:`categorise`). Counted this way, ``exact`` is
its correct, ``type + boundary + boundary+type`` its incorrect, ``missed`` and ``spurious``
its own, and ``exact + type`` the exact scheme's correct (``tests/test_report.py`` checks them
against nervaluate on random sentences). Its ent_type scheme matches by types first, so its
count may differ from ``exact + boundary`` where a prediction overlaps several gold entities.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

CATEGORIES = ("exact", "type", "boundary", "boundary+type", "missed", "spurious")

Entity = tuple[str, int, int]  # (type, start, end), end exclusive


def _overlap(a: Entity, b: Entity) -> int:
    return max(0, min(a[2], b[2]) - max(a[1], b[1]))


def categorise(gold: Sequence[Entity], pred: Sequence[Entity]) -> list[dict]:
    """The errors (and exact matches) of one sentence: ``{"category", "gold", "pred"}`` each,
    ``gold``/``pred`` an entity or None. Predictions are taken in order, each matched with one
    gold entity not matched before, as nervaluate's strict scheme matches them: the one with the
    same boundaries and type, else the first overlapping one; the pair's boundaries and types
    then say its category."""
    gold, pred = [tuple(g[:3]) for g in gold], [tuple(p[:3]) for p in pred]
    out, free = [], list(range(len(gold)))
    for p in pred:
        k = next((j for j in free if gold[j] == p), None)
        if k is None:
            k = next((j for j in free if _overlap(gold[j], p) > 0), None)
        if k is None:
            out.append({"category": "spurious", "gold": None, "pred": p})
            continue
        free.remove(k)
        g = gold[k]
        category = ("exact" if g[0] == p[0] else "type") if g[1:] == p[1:] else \
            ("boundary" if g[0] == p[0] else "boundary+type")
        out.append({"category": category, "gold": g, "pred": p})
    out += [{"category": "missed", "gold": gold[k], "pred": None} for k in free]
    return out


def count(sentences: Sequence[list[dict]]) -> dict:
    """Counts per category, overall and per type (the gold entity's type, or the prediction's
    for spurious ones), and the confusions: gold type -> predicted type of type errors."""
    overall: Counter = Counter()
    per_type: dict[str, Counter] = {}
    confusions: Counter = Counter()
    for errors in sentences:
        for e in errors:
            overall[e["category"]] += 1
            typ = (e["gold"] or e["pred"])[0]
            per_type.setdefault(typ, Counter())[e["category"]] += 1
            if e["category"] in ("type", "boundary+type"):
                confusions[(e["gold"][0], e["pred"][0])] += 1
    return {"overall": {c: overall[c] for c in CATEGORIES},
            "per_type": {t: {c: v[c] for c in CATEGORIES} for t, v in sorted(per_type.items())},
            "confusions": {f"{g} -> {p}": n for (g, p), n in confusions.most_common()}}


def pattern(e: dict) -> str:
    """An error's pattern, for counting: its category and types, e.g. ``type ORG -> LOC``."""
    g, p = e["gold"], e["pred"]
    if e["category"] == "missed":
        return f"missed {g[0]}"
    if e["category"] == "spurious":
        return f"spurious {p[0]}"
    return f"{e['category']} {g[0]} -> {p[0]}" if g[0] != p[0] else f"{e['category']} {g[0]}"
