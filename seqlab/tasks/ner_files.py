"""The NER predictions files, written by evaluation and read back by the study, the report and
the tests: one module owns their format (and one opener, :func:`seqlab.files.open_text`, reads
them gzipped or not).

* Tagging heads: ``predictions_<split>[.<decoding>].conll``, one line per word, ``token gold
  pred`` in the data's own scheme; when that is not the model's, ``gold pred`` again in the
  model's (the columns scored); then the predicted label's probability. A blank line ends a
  sentence.
* Span heads: ``predictions_<split>.jsonl``, one line per sentence, ``{"tokens", "gold":
  [{start, end, type}], "pred": [{start, end, type, score}]}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..data.conll import write_conll
from ..data.schemes import spans_to_tags, tags_to_spans
from ..errors import DataError
from ..files import dumps_line, open_text


def write_tag_predictions(out_file: Path, sents, gold: list[list[str]], pred: list[list[str]],
                          scheme: str, train_scheme: str,
                          probs: list[list[float]] | None = None) -> None:
    """The predictions file of a tagging head (gold and pred in ``train_scheme``)."""
    rows = []
    for k, (s, g, p) in enumerate(zip(sents, gold, pred)):
        cols = [s.tokens, s.tags]
        if scheme == train_scheme:
            cols.append(p)
        else:
            cols += [spans_to_tags(tags_to_spans(p, train_scheme), len(p), scheme), g, p]
        if probs is not None:
            cols.append([f"{q:.4f}" for q in probs[k]])
        rows.append(list(zip(*cols)))
    write_conll(out_file, rows)


def write_span_predictions(out_file: Path, sents, gold: Sequence[list[tuple[str, int, int]]],
                           preds) -> None:
    """The predictions file of a span head (each prediction's score to 4 decimals)."""
    with open(out_file, "w", encoding="utf-8") as fh:
        for s, g, p in zip(sents, gold, preds):
            fh.write(dumps_line({
                "tokens": s.tokens,
                "gold": [{"start": a, "end": b, "type": t}
                         for t, a, b in sorted(g, key=lambda x: (x[1], x[2], x[0]))],
                "pred": [{"start": a, "end": b, "type": t, "score": round(q, 4)}
                         for t, a, b, q in p.entities]}))


def read_tag_predictions(path: Path) -> list[dict]:
    """Each sentence of a tagging head's file: ``tokens``, ``gold_tags`` and ``pred_tags`` (the
    scored columns) and ``probs``.

    Raises:
        DataError: a line of neither 4 nor 6 columns (naming the file and line).
    """
    sents, rows = [], []

    def flush():
        if rows:
            sents.append({"tokens": [r[0] for r in rows], "gold_tags": [r[-3] for r in rows],
                          "pred_tags": [r[-2] for r in rows],
                          "probs": [float(r[-1]) for r in rows]})
        rows.clear()

    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            cols = line.split()
            if not cols:
                flush()
                continue
            if len(cols) not in (4, 6):
                raise DataError(f"expected 4 or 6 columns (token, gold, pred[, gold, pred in the "
                                f"model's scheme], probability), found {len(cols)}", str(path),
                                lineno)
            rows.append(cols)
    flush()
    return sents


def read_predictions(path: Path) -> tuple[list[list[str]], list[list[str]], list[list[float]]]:
    """Gold tags, predicted tags (the scored columns) and predicted-label probabilities of a
    tagging head's predictions file (``.conll`` or ``.conll.gz``)."""
    sents = read_tag_predictions(path)
    return ([s["gold_tags"] for s in sents], [s["pred_tags"] for s in sents],
            [s["probs"] for s in sents])


def read_span_predictions(path: Path) -> list[dict]:
    """Each sentence of a span head's file: ``tokens``, ``gold`` ``(type, start, end)`` and
    ``pred`` ``(type, start, end, score)``.

    Raises:
        DataError: a line that is not such an object (naming the file and line).
    """
    out = []
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            try:
                r = json.loads(line)
                out.append({"tokens": r["tokens"],
                            "gold": [(e["type"], e["start"], e["end"]) for e in r["gold"]],
                            "pred": [(e["type"], e["start"], e["end"], e.get("score"))
                                     for e in r["pred"]]})
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError("expected a span prediction line {tokens, gold, pred}",
                                str(path), lineno) from None
    return out
