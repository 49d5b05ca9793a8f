"""NER errors by the SemEval-2013 categories (Segura-Bedmar et al., 2013; the ``nervaluate``
package), per entity, so that a report can show and filter each one.

Each predicted entity is matched with the gold entities of its sentence:

* ``exact``: a gold entity with the same boundaries and type;
* ``type``: the same boundaries, another type;
* ``boundary``: overlapping boundaries, the same type;
* ``boundary+type``: overlapping, another type and other boundaries;
* ``spurious``: no gold entity overlaps it;

and every gold entity left unmatched is ``missed``. The matching is one-to-one and optimal
(:func:`categorise`): exact pairs first, then, among the rest, the most pairs of overlapping
entities, those with the same boundaries, then the same type, then the larger overlap
preferred (an assignment problem, solved exactly). On flat data that is the pairing of
nervaluate's strict scheme: ``exact`` is its correct, ``type + boundary + boundary+type`` its
incorrect, ``missed`` and ``spurious`` its own, and ``exact + type`` the exact scheme's correct
(``tests/test_report.py`` checks them against nervaluate on random sentences). On nested data,
where one prediction may overlap several gold entities and several predictions one, a greedy
match depends on the order it meets them; this one does not, and ``exact`` per type is the
strict true positives of the run's scores (the test recomputes it from a predictions file and
checks the matching against brute force). nervaluate's ent_type scheme matches by types first,
so its count may differ from ``exact + boundary`` where a prediction overlaps several gold
entities.
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
    ``gold``/``pred`` an entity or None, in the order of the predictions, then the missed gold
    entities. Each prediction is paired with at most one gold entity and each gold entity with
    at most one prediction: first every exact pair, then an optimal matching of the rest (see
    the module docstring); the pair's boundaries and types then say its category."""
    gold, pred = [tuple(g[:3]) for g in gold], [tuple(p[:3]) for p in pred]
    match: dict[int, int] = {}                         # prediction -> gold
    free = list(range(len(gold)))
    for i, p in enumerate(pred):
        k = next((j for j in free if gold[j] == p), None)
        if k is not None:
            match[i] = k
            free.remove(k)
    rest = [i for i in range(len(pred)) if i not in match]
    pairs = [(i, j) for i in rest for j in free if _overlap(pred[i], gold[j]) > 0]
    if pairs:
        match.update(_best_pairs(pred, gold, pairs))
    out = []
    for i, p in enumerate(pred):
        if i not in match:
            out.append({"category": "spurious", "gold": None, "pred": p})
            continue
        g = gold[match[i]]
        category = ("exact" if g[0] == p[0] else "type") if g[1:] == p[1:] else \
            ("boundary" if g[0] == p[0] else "boundary+type")
        out.append({"category": category, "gold": g, "pred": p})
    used = set(match.values())
    out += [{"category": "missed", "gold": g, "pred": None}
            for j, g in enumerate(gold) if j not in used]
    return out


def _pair_weight(p: Entity, g: Entity) -> float:
    """A pair's worth: being a pair dominates, then the same boundaries, then the same type,
    then the overlap's share of the union."""
    union = max(p[2], g[2]) - min(p[1], g[1])
    return 1000.0 + 100.0 * (p[1:] == g[1:]) + 10.0 * (p[0] == g[0]) + _overlap(p, g) / union


def _best_pairs(pred, gold, pairs: list[tuple[int, int]]) -> dict[int, int]:
    """The matching of most total :func:`_pair_weight` among the allowed ``pairs``."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    rows = sorted({i for i, _ in pairs})
    cols = sorted({j for _, j in pairs})
    r, c = {i: k for k, i in enumerate(rows)}, {j: k for k, j in enumerate(cols)}
    w = np.zeros((len(rows), len(cols)))
    for i, j in pairs:
        w[r[i], c[j]] = _pair_weight(pred[i], gold[j])
    a, b = linear_sum_assignment(w, maximize=True)
    return {rows[x]: cols[y] for x, y in zip(a, b) if w[x, y] > 0}


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
