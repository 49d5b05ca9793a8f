"""The NER predictions files, written by evaluation and read back by the study, the report and
the tests: one module owns their format (and one opener, :func:`seqlab.files.open_text`, reads
them gzipped or not), and how each kind of head's predictions are scored.

A head says what it predicts (:attr:`seqlab.heads.Head.target`); :func:`prediction_format` gives
the task the matching :class:`TagFormat` or :class:`SpanFormat`, which the task asks from then on.

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

from ..data.conll import Sentence, write_conll
from ..data.schemes import label_set, spans_to_tags, split_tag, tags_to_spans
from ..errors import DataError
from ..files import dumps_line, open_text
from ..heads import SentencePrediction
from ..metrics import entity_scores, span_scores
from . import StudySplit


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


def gold_in_scheme(sent: Sentence, source: str, target: str) -> list[str]:
    """A sentence's gold entities as tags of ``target`` (a word's label for a tagging head)."""
    return spans_to_tags(sent.gold_spans(source), len(sent.tokens), target)


# --------------------------------------------------------------------------- the two formats


class TagFormat:
    """What a NER head that labels words (``target = "tags"``) predicts, learns from and writes:
    a label per word in the model's scheme, scored with seqeval, written as CoNLL columns."""

    ext = "conll"
    nested = False  # a label per word holds no overlapping entities

    @staticmethod
    def labels(types: set[str], train_scheme: str) -> list[str]:
        return label_set(sorted(types), train_scheme)

    @staticmethod
    def learnt_types(labels: list[str]) -> set[str]:
        return {split_tag(label)[1] for label in labels} - {None}

    @staticmethod
    def check_data(splits: dict[str, list[Sentence]], head: str) -> None:
        """Overlapping entities cannot be learnt or scored a label per word: say where."""
        for sentences in splits.values():
            for s in sentences:
                pair = s.overlap()
                if pair:
                    (ta, sa, ea), (tb, sb, eb) = pair
                    raise DataError(f"entities {ta} [{sa}, {ea}) and {tb} [{sb}, {eb}) overlap; "
                                    f"the {head} head labels each word once and cannot represent "
                                    "nested entities (use model.head: global_pointer)",
                                    s.path or "<data>", s.line)

    @staticmethod
    def encode(gold: list[str], label2id: dict) -> list[int]:
        """Gold tags as the head's label ids."""
        return [label2id[t] for t in gold]

    @classmethod
    def gold(cls, sent: Sentence, scheme: str, train_scheme: str, label2id: dict) -> list[int]:
        return cls.encode(gold_in_scheme(sent, scheme, train_scheme), label2id)

    @staticmethod
    def score_and_write(sents: Sequence[Sentence], by_decoding: dict[str, list], scheme: str,
                        train_scheme: str, out_file: Path | None) -> dict:
        """Score each decoding; write the first (the configured one) to ``out_file`` and the
        others beside it (``<stem>.<decoding>.conll``)."""
        first = next(iter(by_decoding))
        if by_decoding[first] and by_decoding[first][0].tags is None:  # entities only
            return SpanFormat.score_and_write(sents, by_decoding, scheme, train_scheme, out_file)
        result = None
        decodings = {}
        for name, ps in by_decoding.items():
            path = out_file
            if out_file is not None and name != first:
                path = out_file.with_name(f"{out_file.stem}.{name}{out_file.suffix}")
            r = score_and_write(sents, [p.tags for p in ps], scheme, train_scheme, path,
                                probs=[p.probs for p in ps])
            decodings[name] = {"default": r["default"], "strict": r["strict"]}
            if result is None:
                result = r
        result["decode"] = first
        if len(decodings) > 1:
            result["decodings"] = decodings
        return result

    @staticmethod
    def read_split(path: Path, per_type: bool = False) -> StudySplit:
        """The study's counts (and calibration) of a predictions file of this format."""
        return tag_study_split(path, per_type=per_type)

    @staticmethod
    def read_sentences(path: Path, scheme: str) -> list[dict]:
        """Each sentence of a file of this format: ``tokens``, ``gold`` ``(type, start, end)``
        and ``pred`` entities, and each word's predicted label (``pred_tags``) with its
        probability (``probs``); the tags read in ``scheme``, the model's."""
        return [{**s, "gold": tags_to_spans(s["gold_tags"], scheme),
                 "pred": tags_to_spans(s["pred_tags"], scheme)} for s in read_tag_predictions(path)]


class SpanFormat:
    """What a span head (``target = "spans"``) predicts, learns from and writes: typed word
    spans, nested ones included, scored by exact match, written as JSON lines."""

    ext = "jsonl"
    nested = True

    @staticmethod
    def labels(types: set[str], train_scheme: str) -> list[str]:
        return sorted(types)

    @staticmethod
    def learnt_types(labels: list[str]) -> set[str]:
        return set(labels)

    @staticmethod
    def check_data(splits: dict[str, list[Sentence]], head: str) -> None:
        return None

    @staticmethod
    def encode(gold: list[tuple[str, int, int]], label2id: dict) -> list[tuple[int, int, int]]:
        """Gold ``(type, start, end)`` spans with the type as the head's label id."""
        return [(label2id[t], s, e) for t, s, e in gold]

    @classmethod
    def gold(cls, sent: Sentence, scheme: str, train_scheme: str, label2id: dict
             ) -> list[tuple[int, int, int]]:
        return cls.encode(sent.gold_spans(scheme), label2id)

    @staticmethod
    def score_and_write(sents: Sequence[Sentence], by_decoding: dict[str, list], scheme: str,
                        train_scheme: str, out_file: Path | None) -> dict:
        return score_spans(sents, next(iter(by_decoding.values())), scheme, out_file)

    @staticmethod
    def read_split(path: Path, per_type: bool = False) -> StudySplit:
        return span_study_split(path, per_type=per_type)

    @staticmethod
    def read_sentences(path: Path, scheme: str) -> list[dict]:
        """Each sentence of a file of this format: ``tokens``, ``gold`` ``(type, start, end)``
        and ``pred`` ``(type, start, end, score)``."""
        return read_span_predictions(path)


FORMATS = {"tags": TagFormat, "spans": SpanFormat}


def prediction_format(head) -> type[TagFormat | SpanFormat]:
    """The format of what a NER head predicts (:attr:`seqlab.heads.Head.target`)."""
    return FORMATS[head.target]


def format_of_file(path: Path) -> type[TagFormat | SpanFormat]:
    """The format a predictions file is written in, by its extension (``.gz`` aside).

    Raises:
        DataError: an extension of no NER predictions format.
    """
    ext = Path(path).name.removesuffix(".gz").rsplit(".", 1)[-1]
    for fmt in FORMATS.values():
        if fmt.ext == ext:
            return fmt
    raise DataError(f"not a NER predictions file: expected .{' or .'.join(f.ext for f in FORMATS.values())}"
                    f" (gzipped or not), got .{ext}", str(path))


def primary(result: dict) -> dict:
    """The scores of a NER result that pick its best epoch: seqeval's default mode, or the
    exact-match spans of a span head."""
    return result["default"] if "default" in result else result["exact"]


def score_and_write(sents: Sequence[Sentence], pred_tags: list[list[str]], scheme: str,
                    train_scheme: str, out_file: Path | None, *,
                    probs: list[list[float]] | None = None) -> dict:
    """Score predicted per-word tags against the gold sentences and write the predictions file.

    The model's tags are read leniently (an ``I-X`` after ``O`` opens an entity) and written
    back well-formed in ``train_scheme``: both modes score those tags against the gold converted
    to ``train_scheme``, so every figure can be recomputed from the written file with seqeval
    alone.

    The file has one line per word: ``token gold pred`` in the data's own ``scheme``; when that
    is not ``train_scheme``, then ``gold pred`` again in ``train_scheme`` (the columns scored);
    then, with ``probs``, the probability of the predicted label.
    """
    gold = [gold_in_scheme(s, scheme, train_scheme) for s in sents]
    pred = [spans_to_tags(tags_to_spans(p, train_scheme), len(p), train_scheme) for p in pred_tags]
    result = {"default": entity_scores(gold, pred, mode="default", scheme=train_scheme),
              "strict": entity_scores(gold, pred, mode="strict", scheme=train_scheme),
              "sentences": len(sents), "words": sum(len(s.tokens) for s in sents),
              "scored_columns": (f"gold and pred in {train_scheme.upper()}: columns 2 and 3"
                                 if scheme == train_scheme else
                                 f"gold and pred in {train_scheme.upper()}: columns 4 and 5")}
    if out_file is not None:
        write_tag_predictions(out_file, sents, gold, pred, scheme, train_scheme, probs)
    return result


def score_spans(sents: Sequence[Sentence], preds: list[SentencePrediction], scheme: str,
                out_file: Path | None) -> dict:
    """Exact-match span scores of a span head's predictions; the predictions file (JSON lines:
    ``tokens``, ``gold`` and ``pred`` entities with ``start``, ``end``, ``type`` and the
    prediction's ``score``) holds everything to recompute them."""
    gold = [s.gold_spans(scheme) for s in sents]
    result = {"exact": span_scores(gold, [p.entities for p in preds]),
              "sentences": len(sents), "words": sum(len(s.tokens) for s in sents),
              "scored": "exact-match spans (type, start, end) of the gold and pred entities"}
    if out_file is not None:
        write_span_predictions(out_file, sents, gold, preds)
    return result


def tag_study_split(path: Path, *, per_type: bool = False) -> StudySplit:
    from ..metrics import sentence_counts

    gold, pred, prob = read_predictions(path)
    conf, ok, ent = [], [], []
    for g, p, q in zip(gold, pred, prob):
        for gt, pt, c in zip(g, p, q):
            conf.append(c)
            ok.append(gt == pt)
            ent.append(gt != "O" or pt != "O")
    split = StudySplit(sentence_counts(gold, pred), confidence=conf, correct=ok, in_entity=ent)
    if per_type:
        types = entity_scores(gold, pred)["per_type"]
        split.per_type = {"f1": {t: v["f1"] for t, v in types.items()},
                          "support": {t: v["support"] for t, v in types.items()}}
    return split


def span_study_split(path: Path, *, per_type: bool = False) -> StudySplit:
    # ``per_type`` is for a second decoding of a run; a span head has only its own
    counts = []
    for row in read_span_predictions(path):
        g = {e[:3] for e in row["gold"]}
        p = {e[:3] for e in row["pred"]}
        counts.append((len(g & p), len(p), len(g)))
    return StudySplit(counts)
