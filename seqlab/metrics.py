"""Entity scores through seqeval, and SQuAD / CMRC2018 exact match and F1.

NER: ``mode="default"`` is seqeval's default (conlleval-compatible: an ``I-X`` after ``O`` opens an
entity); ``mode="strict"`` counts only well-formed entities of the declared scheme.

QA: :func:`squad_em_f1` follows the official SQuAD v1.1 evaluation script (lowercase, strip
punctuation and the articles a/an/the, split on whitespace, max over the references);
:func:`cmrc_em_f1` follows the official CMRC2018 script (lowercase; drop its punctuation list;
each Chinese character a token and every run of other characters split by nltk's
``word_tokenize``; F1 on the longest common run of tokens, max over references).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_SEQEVAL_SCHEMES = {"iob2": "IOB2", "bioes": "IOBES"}


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], *,
                  mode: str = "default", scheme: str = "iob2") -> dict:
    """Micro precision, recall and F1 over entities, overall and per type, from seqeval.

    Args:
        gold: gold tag sequences.
        pred: predicted tag sequences, each as long as its gold one.
        mode: ``"default"`` (conlleval) or ``"strict"``.
        scheme: the scheme of both (``iob2`` or ``bioes``), used in strict mode.

    Returns:
        ``{"precision", "recall", "f1", "support", "per_type": {type: {...}}}``, as fractions.

    Raises:
        ValueError: sequences of different lengths, or an unknown mode.
    """
    from seqeval.metrics import classification_report

    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sequences but {len(pred)} predicted")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sequence {i}: {len(g)} gold tags but {len(p)} predicted")
    if mode not in ("default", "strict"):
        raise ValueError(f"mode must be 'default' or 'strict', got {mode!r}")
    gold, pred = [list(g) for g in gold], [list(p) for p in pred]
    kwargs = {}
    if mode == "strict":
        from seqeval import scheme as seqeval_scheme

        kwargs = {"mode": "strict", "scheme": getattr(seqeval_scheme, _SEQEVAL_SCHEMES[scheme])}
    if not any(t != "O" for s in gold + pred for t in s):
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "per_type": {}}
    report = classification_report(gold, pred, output_dict=True, zero_division=0, **kwargs)
    micro = report.pop("micro avg")
    for key in ("macro avg", "weighted avg"):
        report.pop(key, None)
    per_type = {k: {"precision": float(v["precision"]), "recall": float(v["recall"]),
                    "f1": float(v["f1-score"]), "support": int(v["support"])}
                for k, v in sorted(report.items())}
    return {"precision": float(micro["precision"]), "recall": float(micro["recall"]),
            "f1": float(micro["f1-score"]), "support": int(micro["support"]),
            "per_type": per_type}


def span_scores(gold: Sequence[Sequence[tuple]], pred: Sequence[Sequence[tuple]]) -> dict:
    """Exact-match micro precision, recall and F1 over entity spans, overall and per type.

    ``gold`` and ``pred``: per sentence, entities ``(type, start, end, ...)`` (extra fields, a
    score, are ignored); an entity counts as found when a predicted one has the same type,
    start and end. Entities may nest or overlap. On flat entities this is seqeval's default
    mode on the same entities written as tags.

    Returns:
        The shape of :func:`entity_scores`: ``{"precision", "recall", "f1", "support",
        "per_type": {type: {...}}}``, as fractions.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    tp: Counter = Counter()
    n_gold: Counter = Counter()
    n_pred: Counter = Counter()
    for g, p in zip(gold, pred):
        gs, ps = {tuple(e[:3]) for e in g}, {tuple(e[:3]) for e in p}
        for e in gs:
            n_gold[e[0]] += 1
        for e in ps:
            n_pred[e[0]] += 1
        for e in gs & ps:
            tp[e[0]] += 1

    def prf(t: int, p: int, g: int) -> dict:
        precision = t / p if p else 0.0
        recall = t / g if g else 0.0
        f1 = 2 * t / (p + g) if p + g else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "support": g}

    types = sorted(set(n_gold) | set(n_pred))
    out = prf(sum(tp.values()), sum(n_pred.values()), sum(n_gold.values()))
    out["per_type"] = {t: prf(tp[t], n_pred[t], n_gold[t]) for t in types}
    return out


def sentence_counts(gold, pred):
    """Per sentence: (true positives, predicted entities, gold entities), seqeval default mode."""
    import numpy as np
    from seqeval.metrics.sequence_labeling import get_entities

    rows = []
    for g, p in zip(gold, pred):
        ge, pe = set(get_entities(list(g))), set(get_entities(list(p)))
        rows.append((len(ge & pe), len(pe), len(ge)))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def format_scores(scores: dict, title: str = "") -> str:
    """A conlleval-like table of entity scores, percentages with two decimals."""
    lines = [title] if title else []
    lines.append(f"{'type':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    rows = list(scores.get("per_type", {}).items()) + [("overall", scores)]
    for name, s in rows:
        lines.append(f"{name:<16}{100 * s['precision']:>10.2f}{100 * s['recall']:>10.2f}"
                     f"{100 * s['f1']:>10.2f}{s['support']:>9d}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- SQuAD v1.1


def normalize_answer(s: str) -> str:
    """Lowercase, strip punctuation, the articles a/an/the and extra whitespace (SQuAD v1.1)."""
    s = s.lower()
    exclude = set(string.punctuation)
    s = "".join(ch for ch in s if ch not in exclude)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _squad_f1(prediction: str, truth: str, version: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(truth).split()
    if version == "2.0" and (not pred_tokens or not truth_tokens):
        return float(pred_tokens == truth_tokens)  # v2: "no answer" matches "no answer"
    common = Counter(pred_tokens) & Counter(truth_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def _check_references(references: Sequence[str]) -> None:
    if isinstance(references, str):
        raise ValueError("references must be a list of answer strings, got one string")
    if not references:
        raise ValueError("at least one reference answer is needed")


def squad_em_f1(prediction: str, references: Sequence[str], *,
                version: str = "1.1") -> tuple[float, float]:
    """Exact match and F1 of one prediction, max over the references, as the official SQuAD
    evaluation script of ``version`` computes them.

    The two differ only where a side normalises to no token: v1.1 gives F1 0 (no token in
    common), v2.0 gives 1 when both are empty (an unanswerable question, references ``[""]``,
    answered with ``""``) and 0 otherwise.

    Example:
        >>> squad_em_f1("the", ["a"]), squad_em_f1("the", ["a"], version="2.0")
        ((1.0, 0.0), (1.0, 1.0))
    """
    _check_references(references)
    if version not in ("1.1", "2.0"):
        raise ValueError(f"version must be '1.1' or '2.0', got {version!r}")
    em = max(float(normalize_answer(prediction) == normalize_answer(r)) for r in references)
    f1 = max(_squad_f1(prediction, r, version) for r in references)
    return em, f1


# --------------------------------------------------------------------------- CMRC2018

# The official script's ``sp_char`` list, verbatim ("……" is two characters and so never matches).
_CMRC_SP_CHAR = ["-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=", "，", "。", "：", "？", "！",
                 "“", "”", "；", "’", "《", "》", "……", "·", "、", "「", "」", "（", "）", "－",
                 "～", "『", "』"]


def _cmrc_segment(text: str, rm_punc: bool = True) -> list[str]:
    """The official ``mixed_segmentation``: each Chinese character is a token; runs of other
    characters are split by nltk's ``word_tokenize``.

    The official script lets ``word_tokenize`` split sentences first, which needs nltk's punkt
    model (a separate download); here each run is taken as one sentence
    (``preserve_line=True``). Of the 9,657 CMRC2018 dev answers, 9 hold a run with a full stop
    before more text (all initials like ``Henry A. Walsh``); only there can the two differ.
    """
    from nltk.tokenize import word_tokenize

    out, run = [], ""
    for ch in str(text).lower().strip():
        if rm_punc and ch in _CMRC_SP_CHAR:
            continue
        if re.search(r"[\u4e00-\u9fa5]", ch) or ch in _CMRC_SP_CHAR:
            if run:
                out.extend(word_tokenize(run, preserve_line=True))
                run = ""
            out.append(ch)
        else:
            run += ch
    if run:
        out.extend(word_tokenize(run, preserve_line=True))
    return out


def _cmrc_remove_punctuation(text: str) -> str:
    return "".join(ch for ch in str(text).lower().strip() if ch not in _CMRC_SP_CHAR)


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common contiguous run (the official script's ``find_lcs``)."""
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def cmrc_em_f1(prediction: str, references: Sequence[str]) -> tuple[float, float]:
    """Exact match and F1 of one prediction as the official CMRC2018 evaluation defines them."""
    _check_references(references)
    pred_seg = _cmrc_segment(prediction)
    f1 = 0.0
    for ref in references:
        lcs = _lcs_length(_cmrc_segment(ref), pred_seg)
        if lcs == 0:
            continue
        precision, recall = lcs / len(pred_seg), lcs / len(_cmrc_segment(ref))
        f1 = max(f1, 2 * precision * recall / (precision + recall))
    em = max(float(_cmrc_remove_punctuation(prediction) == _cmrc_remove_punctuation(r))
             for r in references)
    return em, f1
