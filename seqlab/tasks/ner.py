"""NER as a task: sentences -> windowed features -> the head's loss; predict, decode, score, write.

The head (:mod:`seqlab.heads`) says what a window's targets are, how a batch's loss is computed
and how a sentence's windows become entities. Heads that label words (``target = "tags"``) are
scored with seqeval on CoNLL-style predictions; heads that score spans with exact-match span
scores on JSON lines, which equal seqeval's default mode on flat data.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import Config
from ..data.alignment import build_features, cjk_character_words, subwords_per_word, wrap_ids
from ..data.conll import Sentence
from ..data.registry import load_files, load_named, load_source, resolve_scheme, unknown_dataset
from ..data.schemes import label_set, spans_to_tags, tags_to_spans
from ..errors import ConfigError, DataError, SeqlabError, first_process
from ..files import (AtomicOutput, blocks, check_input_files, check_output_file, dumps_line,
                     evaluate_output, iter_lines, write_json)
from ..heads import SentencePrediction, get_head
from ..metrics import entity_scores, format_scores, span_scores
from . import (EvaluateOptions, PredictOptions, Predictor, RequestError, Run, StudySplit,
               Task, register_task)
from .ner_files import (read_predictions, read_span_predictions, write_span_predictions,
                        write_tag_predictions)

PREDICT_BLOCK_LINES = 2048  # `seqlab predict` reads, predicts and writes this many lines at a time


@dataclass
class NerCorpus:
    """Splits of original sentences, their scheme, and the labels the model predicts (tags for
    heads that label words, entity types for span heads)."""

    splits: dict[str, list[Sentence]]
    scheme: str          # the files' scheme
    train_scheme: str    # the model's scheme (tagging heads)
    labels: list[str]
    name: str = "files"


def _types(sentences: Sequence[Sentence], scheme: str) -> set[str]:
    return {t for s in sentences for t, _, _ in s.gold_spans(scheme)}


def first_unseen_type(sentences: Sequence[Sentence], scheme: str, known: set[str]
                      ) -> tuple[str, str, list[str]] | None:
    """``(file:line of its first word, the type, every unseen type)`` for the first entity
    whose type is not in ``known``, or None."""
    extra = sorted(_types(sentences, scheme) - set(known))
    if not extra:
        return None
    for s in sentences:
        for typ, start, _ in s.gold_spans(scheme):
            if typ in extra:
                return s.where(start), typ, extra
    return None


def refuse_nested(splits: dict[str, list[Sentence]], head: str) -> None:
    """A head that labels words cannot learn or score overlapping entities: say where."""
    for sentences in splits.values():
        for s in sentences:
            pair = s.overlap()
            if pair:
                (ta, sa, ea), (tb, sb, eb) = pair
                raise DataError(f"entities {ta} [{sa}, {ea}) and {tb} [{sb}, {eb}) overlap; the "
                                f"{head} head labels each word once and cannot represent nested "
                                "entities (use model.head: global_pointer)", s.path or "<data>",
                                s.line)


def load_corpus(cfg: Config, labels: list[str] | None = None) -> NerCorpus:
    """Read the configured splits, resolve the scheme, build the label set for the head.

    Raises:
        DataError: no data configured, a missing file, nested entities for a tagging head, or
            a dev/test entity type absent from train.
    """
    d = cfg.data
    head = get_head(cfg.model.head)
    if d.dataset and (d.train_file or d.dev_file or d.test_file):
        raise DataError("give either data.dataset or data.train_file/dev_file/test_file, not both")
    if d.dataset:
        splits, spec = load_named(d.dataset, d.data_dir)
        declared = spec.scheme if d.scheme == "auto" else d.scheme
        name = d.dataset
    elif d.path:
        splits = load_source(d)
        declared, name = d.scheme, Path(d.path).name
    elif d.train_file or d.dev_file or d.test_file:
        splits = load_files(d.train_file, d.dev_file, d.test_file, options=d)
        declared, name = d.scheme, Path(d.train_file or d.dev_file or d.test_file).name
    else:
        raise DataError("no data: set data.dataset (e.g. conll2003), data.path (a datasets "
                        "directory or hub id) or data.train_file")
    if head.target == "tags":
        refuse_nested(splits, head.name)
    if d.limit and "train" in splits:
        splits["train"] = splits["train"][: d.limit]
    if d.eval_limit:
        for split in ("dev", "test"):
            if split in splits:
                splits[split] = splits[split][: d.eval_limit]
    scheme = resolve_scheme(splits, declared)
    if d.remove_entities is not None and "train" in splits:
        from ..data.corrupt import remove_entities

        splits["train"], _ = remove_entities(splits["train"], scheme, p=d.remove_entities,
                                             seed=d.remove_seed, partial=d.annotation == "partial")
    mark_partial(splits, scheme, d.annotation)
    if labels is None:
        if "train" not in splits:
            raise DataError("no training split: set data.train_file")
        train_types = _types(splits["train"], scheme)
        for split in ("dev", "test"):
            unseen = first_unseen_type(splits.get(split, []), scheme, train_types)
            if unseen:
                where, typ, extra = unseen
                raise DataError(f"{where}: entity type {typ} of the {split} split never occurs in "
                                f"the training data ({split} types absent from training: "
                                f"{', '.join(extra)}); training types: "
                                f"{', '.join(sorted(train_types))}")
        labels = (label_set(sorted(train_types), cfg.data.train_scheme) if head.target == "tags"
                  else sorted(train_types))
    return NerCorpus(splits, scheme, cfg.data.train_scheme, labels, name)


def mark_partial(splits: dict[str, list[Sentence]], scheme: str, annotation: str) -> None:
    """Partial annotation: with ``data.annotation: partial`` every training word outside an
    annotated entity is unknown (where the file marks no words of its own); evaluation data
    must be complete.

    Raises:
        DataError: a dev or test sentence with unknown words (naming its file and line).
    """
    if annotation == "partial":
        for s in splits.get("train", []):
            if s.known is None:
                s.known = [False] * len(s.tokens)
                for _, a, b in s.gold_spans(scheme):
                    s.known[a:b] = [True] * (b - a)
    for split, sentences in splits.items():
        if split == "train":
            continue
        for s in sentences:
            if s.known is not None and not all(s.known):
                raise DataError(f"{s.where(s.known.index(False))}: the {split} split has words "
                                "whose annotation is unknown; evaluation data must be completely "
                                "annotated (partial annotation is for training only)")


def class_weights(counts: Sequence[int], kind: str) -> list[float]:
    """Per-class weights from label counts: ``1 / n_c`` (``inverse``) or ``1 / sqrt(n_c)``
    (``inverse_sqrt``), scaled so that their mean over the counted tokens is 1. A class never
    seen counts as seen once.

    Example:
        >>> class_weights([90, 10], "inverse")
        [0.5555555555555556, 5.0]
    """
    power = {"inverse": 1.0, "inverse_sqrt": 0.5}[kind]
    raw = [max(n, 1) ** -power for n in counts]
    scale = sum(counts) / sum(n * w for n, w in zip(counts, raw)) if sum(counts) else 1.0
    return [w * scale for w in raw]


def gold_in_scheme(sent: Sentence, source: str, target: str) -> list[str]:
    return spans_to_tags(sent.gold_spans(source), len(sent.tokens), target)


@register_task("ner")
class NerTask(Task):
    """NER behind the task protocol (:class:`seqlab.tasks.Task`)."""

    primary_metric = "entity F1"
    pipeline_tag = "token-classification"
    title = "Named Entity Recognition"

    @classmethod
    def report_sections(cls, data: dict) -> tuple[list[str], dict]:
        from .ner_report import ner_sections

        return ner_sections(data)
    unit_name = "sentences"
    default_head = "softmax"
    cli_options = {}

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        if cfg.data.dataset and (problem := unknown_dataset(cfg.data.dataset, "ner")):
            raise ConfigError(f"data.dataset: {problem}")

    @classmethod
    def from_config(cls, cfg: Config) -> NerTask:
        from ..models import load_tokenizer

        corpus = load_corpus(cfg)
        task = cls(cfg, load_tokenizer(cfg.model.encoder, max_length=cfg.model.max_length), corpus)
        if task.head.target == "spans" and first_process():
            nested = sum(1 for s in corpus.splits.get("train", []) if s.overlap())
            print(f"seqlab: eval.allow_nested {cfg.eval.allow_nested}: predictions "
                  f"{'keep nested entities' if task.head.keep_nested else 'are made flat'} "
                  f"({nested} training sentences hold nested or overlapping entities)",
                  file=sys.stderr)
        return task

    def __init__(self, cfg: Config, tokenizer, corpus: NerCorpus):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.corpus = corpus
        self.head = get_head(cfg.model.head)(cfg, corpus.labels)
        self.head.data_nested = any(s.overlap() for s in corpus.splits.get("train", []))
        self.head.partial = any(s.known is not None for s in corpus.splits.get("train", []))
        self.label2id = {l: i for i, l in enumerate(corpus.labels)}
        self.prediction_ext = "conll" if self.head.target == "tags" else "jsonl"
        opts = dict(cfg.loss.options)
        if opts.get("weight") is not None and len(opts["weight"]) != len(corpus.labels):
            raise DataError(f"loss.weight has {len(opts['weight'])} values, expected one per label "
                            f"({len(corpus.labels)}: {', '.join(corpus.labels)})")
        if cfg.loss.class_weight:
            opts["weight"] = class_weights(self.label_counts(), cfg.loss.class_weight)
        self.loss_fn = self.head.build_loss(opts)

    def label_counts(self) -> list[int]:
        """How often each label is a word's gold tag in the training split (in the model's
        scheme)."""
        counts = [0] * len(self.corpus.labels)
        for s in self.corpus.splits.get("train", []):
            tags = gold_in_scheme(s, self.corpus.scheme, self.corpus.train_scheme)
            for k, t in enumerate(tags):
                if s.known is None or s.known[k]:  # an unknown word is no O
                    counts[self.label2id[t]] += 1
        return counts

    def has_split(self, split: str) -> bool:
        return bool(self.corpus.splits.get(split))

    def score(self, result: dict) -> float:
        return float(_primary(result)["f1"])

    @staticmethod
    def summary(result: dict) -> dict:
        p = _primary(result)
        out = {"precision": p["precision"], "recall": p["recall"], "f1": p["f1"]}
        if "strict" in result:
            out["f1_strict"] = result["strict"]["f1"]
        for name, scores in result.get("decodings", {}).items():
            out[f"f1_{name}"] = scores["default"]["f1"]
        return out

    def report(self, result: dict) -> str:
        lines = []
        for split in ("dev", "test"):
            if split in result:
                r = result[split]
                if "exact" in r:
                    lines.append(format_scores(r["exact"], f"{split} (exact-match spans)"))
                    lines.append(f"{split} entity F1: {100 * r['exact']['f1']:.2f}")
                    continue
                lines.append(format_scores(r["default"], f"{split} (seqeval default mode)"))
                others = "".join(f", {name} decoding {100 * s['default']['f1']:.2f}"
                                 for name, s in r.get("decodings", {}).items()
                                 if name != r.get("decode"))
                lines.append(f"{split} entity F1: {100 * r['default']['f1']:.2f} "
                             f"(strict {100 * r['strict']['f1']:.2f}{others})")
        scored = [result[s] for s in ("dev", "test") if s in result]
        if scored and all(_primary(r)["f1"] == 0 and _primary(r)["support"] for r in scored):
            lines.append("hint: not one entity was predicted right. A model that predicts no "
                         "entity yet needs more training: more epochs or a higher learning rate "
                         "(the span heads start slowly on small data: README, \"Heads\"); "
                         "else check that data.scheme fits the files' tags")
        return "\n".join(lines)

    def save_extra(self, directory: Path) -> None:
        from .. import __version__

        write_json(directory / "seqlab.json", {
            "seqlab_version": __version__, "task": "ner", "dataset": self.corpus.name,
            "scheme": self.corpus.scheme, "train_scheme": self.corpus.train_scheme,
            "labels": self.corpus.labels, "max_length": self.cfg.model.max_length,
            "window_overlap": self.cfg.model.window_overlap,
            "cjk_characters_as_words": cjk_character_words(self.corpus.splits.get("train", [])),
            **self.head.meta()})

    # ----------------------------------------------------------------- features

    def _gold(self, sent: Sentence):
        if self.head.target == "tags":
            return [self.label2id[t] for t in gold_in_scheme(sent, self.corpus.scheme,
                                                             self.corpus.train_scheme)]
        return [(self.label2id[t], s, e) for t, s, e in sent.gold_spans(self.corpus.scheme)]

    def features(self, split: str):
        """A ``datasets.Dataset`` of windowed training features for ``split``."""
        import datasets

        sents = self.corpus.splits[split]
        tok, m = self.tokenizer, self.cfg.model
        rows: dict[str, list] = {}
        for sent, words in zip(sents, subwords_per_word(tok, [s.tokens for s in sents])):
            gold = self._gold(sent)
            for f in build_features(words, None, max_length=m.max_length, overlap=m.window_overlap,
                                    wrap=wrap_ids(tok)):
                targets = self.head.window_targets(f, gold, len(words))
                if self.head.partial and split == "train":  # every row, so the keys agree
                    targets = self.head.mask_unknown(targets, f, sent.known or [True] * len(words))
                row = {"input_ids": f["input_ids"], "length": len(f["input_ids"]), **targets}
                for k, v in row.items():
                    rows.setdefault(k, []).append(v)
        return datasets.Dataset.from_dict(rows)

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return self.head.collate(rows, self.tokenizer.pad_token_id)

    # ----------------------------------------------------------------- evaluation

    def evaluate(self, model, split: str, *, device=None, out_file: Path | None = None,
                 progress: bool = True, dtype: torch.dtype | None = None,
                 accelerator=None) -> dict:
        """Predict every word of ``split`` (windows merged) and score against the original gold.

        ``dtype``: see :func:`predict_sentences`; ``accelerator``: see :meth:`Task.evaluate`."""
        from . import gather_shards, shard_of

        sents = self.corpus.splits[split]
        mine = shard_of(len(sents), accelerator)
        preds = predict_sentences(model, self.tokenizer, self.head, [sents[i].tokens for i in mine],
                                  max_length=self.cfg.model.max_length,
                                  overlap=self.cfg.model.window_overlap,
                                  batch_size=self.cfg.train.eval_batch_size, device=device,
                                  desc="evaluating" if split == "eval" else f"evaluating {split}",
                                  progress=progress, dtype=dtype,
                                  all_decodings=True)
        names = list(preds)
        per_sentence = [{n: preds[n][k] for n in names} for k in range(len(mine))]
        per_sentence = gather_shards(mine, per_sentence, len(sents), accelerator)
        if accelerator is not None and not accelerator.is_main_process:
            out_file = None
        by_decoding = {n: [p[n] for p in per_sentence] for n in names}
        return self.score_and_write(sents, by_decoding, out_file)

    def score_and_write(self, sents: Sequence[Sentence], by_decoding: dict[str, list],
                        out_file: Path | None) -> dict:
        """Score each decoding; write the first (the configured one) to ``out_file`` and the
        others beside it (``<stem>.<decoding>.conll``)."""
        first = next(iter(by_decoding))
        preds = by_decoding[first]
        if preds and preds[0].tags is None or not preds and self.head.target == "spans":
            return score_spans(sents, preds, self.corpus.scheme, out_file)
        result = None
        decodings = {}
        for name, ps in by_decoding.items():
            path = out_file
            if out_file is not None and name != first:
                path = out_file.with_name(f"{out_file.stem}.{name}{out_file.suffix}")
            r = score_and_write(sents, [p.tags for p in ps], self.corpus.scheme,
                                self.corpus.train_scheme, path, probs=[p.probs for p in ps])
            decodings[name] = {"default": r["default"], "strict": r["strict"]}
            if result is None:
                result = r
        result["decode"] = first
        if len(decodings) > 1:
            result["decodings"] = decodings
        return result

    # ----------------------------------------------------------------- the CLI

    @classmethod
    def cli_evaluate(cls, opts: EvaluateOptions, run: Run) -> int:
        return _evaluate_cli(opts, run)

    @classmethod
    def cli_predict(cls, opts: PredictOptions, run: Run) -> int:
        return _predict_cli(opts, run)

    @classmethod
    def predictor(cls, run: Run, opts: PredictOptions) -> NerPredictor:
        return NerPredictor(run, opts)

    # ----------------------------------------------------------------- the study

    @classmethod
    def card_metrics(cls, split_metrics: dict) -> list[tuple[str, float, str]]:
        s = _primary(split_metrics)
        kind = "seqeval default" if "default" in split_metrics else "exact-match spans"
        return [("f1", 100 * s["f1"], f"entity F1 ({kind})"),
                ("precision", 100 * s["precision"], "precision"),
                ("recall", 100 * s["recall"], "recall")]

    @classmethod
    def study_metrics(cls, split_metrics: dict) -> dict:
        p = _primary(split_metrics)
        return {"f1": p["f1"], "precision": p["precision"], "recall": p["recall"],
                "f1_strict": split_metrics.get("strict", p)["f1"],
                "per_type": {k: v["f1"] for k, v in p["per_type"].items()},
                "support": {k: v["support"] for k, v in p["per_type"].items()},
                "decodings": {n: s["default"]["f1"]
                              for n, s in split_metrics.get("decodings", {}).items()}}

    @classmethod
    def study_split(cls, run_dir: Path, split: str, decoding: str | None = None) -> StudySplit | None:
        import numpy as np

        stem = f"predictions_{split}" + (f".{decoding}" if decoding else "")
        for ext, reader in ((".conll", _read_tag_predictions), (".jsonl", _read_span_predictions)):
            for path in (run_dir / f"{stem}{ext}.gz", run_dir / f"{stem}{ext}"):
                if path.is_file():
                    # per-type figures only for a decoding that metrics.json does not score
                    got = reader(path, per_type=decoding is not None)
                    got.counts = np.asarray(got.counts, dtype=np.int64).reshape(-1, 3)
                    return got
        return None

    @classmethod
    def study_documents(cls, cfg: Config, split: str) -> list[int] | None:
        """Each sentence's document in ``split`` (CoNLL ``-DOCSTART-``), or None where the data
        marks none."""
        corpus = load_corpus(cfg)
        docs = [s.doc_id for s in corpus.splits.get(split, [])]
        return docs if len(set(docs)) > 1 else None

    @classmethod
    def study_scores(cls) -> dict:
        """Entity F1, precision and recall from summed ``(true positives, predicted, gold)``."""
        import numpy as np

        def ratio(num, den):
            return np.where(den > 0, num / np.maximum(den, 1), 0.0)

        return {"f1": lambda c: ratio(2 * c[..., 0], c[..., 1] + c[..., 2]),
                "precision": lambda c: ratio(c[..., 0], c[..., 1]),
                "recall": lambda c: ratio(c[..., 0], c[..., 2])}


def _primary(result: dict) -> dict:
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


def _read_tag_predictions(path: Path, *, per_type: bool = False) -> StudySplit:
    from ..metrics import entity_scores, sentence_counts

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


def _read_span_predictions(path: Path, *, per_type: bool = False) -> StudySplit:
    # ``per_type`` is for a second decoding of a run; a span head has only its own
    counts = []
    for row in read_span_predictions(path):
        g = {e[:3] for e in row["gold"]}
        p = {e[:3] for e in row["pred"]}
        counts.append((len(g & p), len(p), len(g)))
    return StudySplit(counts)


MAX_PADDING = 0.25  # the share of a prediction batch's positions that may be padding


def length_batches(lengths: Sequence[int], batch_size: int, max_padding: float = MAX_PADDING
                   ) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first.

    Features are sorted by length and a batch takes the next one while it holds fewer than
    ``batch_size`` rows (or more rows of short features, up to ``batch_size * 32`` positions)
    and at most ``max_padding`` of its positions would be padding. Many features of one length
    (a large input) make batches of that length only, with no padding and no attention mask;
    a few of many lengths (the requests a server batches together) make padded batches rather
    than a batch per length.
    """
    order = sorted(range(len(lengths)), key=lambda k: -lengths[k])
    batches: list[list[int]] = []
    real = 0
    for k in order:
        if batches:
            last = batches[-1]
            longest = lengths[last[0]]
            rows = max(batch_size, (batch_size * 32) // max(longest, 1))
            if len(last) < rows and real + lengths[k] >= (1 - max_padding) * longest * (len(last) + 1):
                last.append(k)
                real += lengths[k]
                continue
        batches.append([k])
        real = lengths[k]
    return batches


@torch.inference_mode()
def predict_sentences(model, tokenizer, head, sentences: Sequence[Sequence[str]], *,
                      max_length: int, overlap: int, batch_size: int = 64, device=None,
                      desc: str = "predicting", progress: bool = True,
                      dtype: torch.dtype | None = None, all_decodings: bool = False
                      ) -> dict[str, list[SentencePrediction]]:
    """Every sentence predicted by ``head``: per decoding (the configured one first, the
    others too with ``all_decodings``, as evaluation scores them), a
    :class:`~seqlab.heads.SentencePrediction` per sentence.

    Features are batched by length (:func:`length_batches`), so little compute goes to padding
    (none in a batch of one length, which runs without an attention mask); the windows of a
    long sentence are merged by the head. ``dtype=torch.bfloat16`` runs the
    model under bfloat16 autocast (faster where the hardware has bf16 units, at a small cost in
    precision); None runs it in its own precision, with any autocast around the call switched
    off.
    """
    was_training = model.training
    model.eval()
    if device is None:
        device = getattr(model, "device", None) or next(model.parameters()).device
    device = torch.device(device)
    per_word = subwords_per_word(tokenizer, sentences) if sentences else []
    feats = []  # (sentence, window, feature)
    windows: list[list[tuple[int, int]]] = []
    for si, words in enumerate(per_word):
        fs = build_features(words, None, max_length=max_length, overlap=overlap,
                            wrap=wrap_ids(tokenizer))
        windows.append([tuple(f["window"]) for f in fs])
        feats.extend((si, wi, f) for wi, f in enumerate(fs))
    batches = length_batches([len(f["input_ids"]) for _, _, f in feats], batch_size)
    state = head.start_prediction(windows)
    precision = (torch.autocast(device.type, dtype=dtype) if dtype is not None
                 else torch.autocast(device.type, enabled=False))
    bar = tqdm(total=len(sentences), desc=desc, unit="sent", disable=not progress, leave=False)
    with precision:
        for idx in batches:
            chunk = [feats[k] for k in idx]
            width = len(chunk[0][2]["input_ids"])  # the longest, first
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id or 0, dtype=torch.long)
            keep = torch.zeros((len(chunk), width), dtype=torch.bool)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, (_, _, f) in enumerate(chunk):
                n = len(f["input_ids"])
                ids[r, :n] = torch.tensor(f["input_ids"])
                keep[r, :n] = torch.tensor(f["word_index"]) >= 0
                mask[r, :n] = 1
            if bool(mask.all()):  # one length: no padding, no mask
                out = model(input_ids=ids.to(device))
            else:
                out = model(input_ids=ids.to(device), attention_mask=mask.to(device))
            head.collect_batch(state, out, chunk, keep.to(device))
            bar.update(sum(1 for _, wi, _ in chunk if wi == 0))
    bar.close()
    if was_training:
        model.train()
    return head.finish_prediction(state, windows, [len(w) for w in per_word],
                                  all_decodings=all_decodings)


def predict_words(model, tokenizer, sentences: Sequence[Sequence[str]], *, max_length: int,
                  overlap: int, batch_size: int = 64, device=None, progress: bool = False,
                  dtype: torch.dtype | None = None) -> list[list[tuple[int, float]]]:
    """``(label id, probability)`` of every word under a token classifier's argmax (the softmax
    head with ``eval.decode: argmax``), windows merged."""
    cfg = Config()
    cfg.eval.decode = "argmax"
    id2label = model.config.id2label  # keys are strings in an exported config.json
    labels = [id2label[i] if i in id2label else id2label[str(i)] for i in range(len(id2label))]
    head = get_head("softmax")(cfg, labels)
    preds = predict_sentences(model, tokenizer, head, sentences, max_length=max_length,
                              overlap=overlap, batch_size=batch_size, device=device,
                              progress=progress, dtype=dtype)["argmax"]
    index = {l: i for i, l in enumerate(labels)}
    return [[(index[t], q) for t, q in zip(p.tags, p.probs)] for p in preds]


# --------------------------------------------------------------------------- the CLI's paths


def _head_for_run(run: Run, labels: list[str]):
    """The head of a trained run, configured as the run was (decoding, options)."""
    meta, cfg = run.meta, run.config
    cfg.data.train_scheme = meta["train_scheme"]
    if "allow_nested" in meta:  # what the run decided (eval.allow_nested: auto), not the config
        cfg.eval.allow_nested = "true" if meta["allow_nested"] else "false"
    head = get_head(meta.get("head", "softmax"))(cfg, labels)
    head.data_nested = bool(meta.get("allow_nested", False))
    return head


def _evaluate_cli(opts: EvaluateOptions, run: Run) -> int:
    from ..data.schemes import split_tag
    from ..export import prediction_model
    from ..models import load_tokenizer

    meta, cfg = run.meta, run.config
    dtype = torch.bfloat16 if opts.bf16 else None
    ext = "conll" if get_head(meta.get("head", "softmax")).target == "tags" else "jsonl"
    if opts.dataset:
        name = f"{opts.dataset}-{opts.split}"
        out = evaluate_output(opts.output, run.directory, name, ext)
        splits, spec = load_named(opts.dataset, opts.data_dir)
        if opts.split not in splits:
            raise SeqlabError(f"dataset {opts.dataset!r} has no split {opts.split!r}; "
                              f"it has {', '.join(splits)}")
        sents = splits[opts.split]
        scheme = resolve_scheme({opts.split: sents}, spec.scheme)
    else:
        name = Path(opts.file).stem
        out = evaluate_output(opts.output, run.directory, name, ext)
        sents = load_files(None, None, opts.file,
                           options=dataclasses.replace(cfg.data, format="auto"))["test"]
        scheme = resolve_scheme({"test": sents}, "auto")
    head = _head_for_run(run, meta["labels"])
    if head.target == "tags":
        refuse_nested({"eval": sents}, head.name)
        learnt = {split_tag(label)[1] for label in meta["labels"]} - {None}
    else:
        learnt = set(meta["labels"])
    unseen = first_unseen_type(sents, scheme, learnt)
    if unseen:
        where, typ, extra = unseen
        print(f"seqlab evaluate: warning: {where}: gold entity type {typ} was never learnt by this "
              f"model (unlearnt types: {', '.join(extra)}); their entities are scored as missed "
              "(they lower recall, and the type's F1 is 0)", file=sys.stderr)
    corpus = NerCorpus({"eval": sents}, scheme, meta["train_scheme"], meta["labels"], name)
    cfg.model.max_length, cfg.model.window_overlap = meta["max_length"], meta["window_overlap"]
    cfg.train.eval_batch_size = opts.batch_size
    task = NerTask.__new__(NerTask)
    task.cfg, task.corpus, task.head = cfg, corpus, head
    task.tokenizer = load_tokenizer(str(run.directory))
    model = prediction_model(run, opts)
    result = task.evaluate(model, "eval", out_file=out, progress=opts.progress, dtype=dtype)
    if "exact" in result:
        print(format_scores(result["exact"], f"{name}: exact-match spans"))
    else:
        print(format_scores(result["default"], f"{name}: seqeval default mode (conlleval)"))
        print()
        print(format_scores(result["strict"], f"{name}: seqeval strict mode ({meta['train_scheme']})"))
        for dec, s in result.get("decodings", {}).items():
            if dec != result["decode"]:
                print(f"{dec} decoding: entity F1 {100 * s['default']['f1']:.2f} (written beside it)")
    print(f"predictions written to {out} (scored: "
          f"{result.get('scored_columns') or result.get('scored')})")
    return 0


def _predict_cli(opts: PredictOptions, run: Run) -> int:
    from ..data.alignment import split_words
    from ..export import prediction_model
    from ..models import load_tokenizer

    meta = run.meta
    dtype = torch.bfloat16 if opts.bf16 else None
    check_input_files(opts.files)  # before any work
    out_path = check_output_file(opts.output)
    head = _head_for_run(run, meta["labels"])
    tokenizer = load_tokenizer(str(run.directory))
    model = prediction_model(run, opts)
    lines = iter_lines(opts.files)
    first = next(lines, None)  # empty input: empty output, exit 0
    if first is None:
        with AtomicOutput(out_path):
            pass
        return 0
    bar = tqdm(desc="predicting", unit="line", disable=not opts.progress)
    with AtomicOutput(out_path) as out:
        # blocks of lines: bounded memory, and output from the first block on
        for block in blocks(_chain_first(first, lines), PREDICT_BLOCK_LINES):
            texts = [text for text, _, _ in block]
            split = [split_words(t, cjk_characters=_cjk_words(meta)) for t in texts]
            preds = predict_sentences(model, tokenizer, head, [w for w, _ in split],
                                      max_length=meta["max_length"], overlap=meta["window_overlap"],
                                      batch_size=opts.batch_size, progress=False, dtype=dtype)
            for text, (_, offsets), pred in zip(texts, split, next(iter(preds.values()))):
                out.write(dumps_line({"text": text,
                                      "entities": entity_records(pred.entities, offsets, text)}))
            out.flush()
            bar.update(len(block))
    bar.close()
    return 0


def _cjk_words(meta: dict) -> bool:
    """How the run splits CJK text: a character a word unless its training words said
    otherwise (runs made before the key: a character a word, as they were)."""
    return bool(meta.get("cjk_characters_as_words", True))


class NerPredictor(Predictor):
    """``{"texts": [...]}`` in, a list of entities per text out: ``seqlab predict``'s words,
    model and decoding, so the same entities."""

    form = "texts"

    def __init__(self, run: Run, opts: PredictOptions):
        from ..export import prediction_model
        from ..models import load_tokenizer

        self.meta = run.meta
        self.head = _head_for_run(run, run.meta["labels"])
        self.tokenizer = load_tokenizer(str(run.directory))
        self.model = prediction_model(run, opts)
        self.dtype = torch.bfloat16 if opts.bf16 else None
        self.batch_size = opts.batch_size

    def parse(self, payload, limits):
        if not isinstance(payload, dict) or "texts" not in payload:
            raise RequestError(422, 'expected a JSON object {"texts": ["a text", ...]}')
        texts = payload["texts"]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise RequestError(422, '"texts" must be a list of strings')
        if len(texts) > limits.max_texts:
            raise RequestError(413, f"{len(texts)} texts in one request; at most {limits.max_texts}")
        for k, t in enumerate(texts):
            if len(t) > limits.max_chars:
                raise RequestError(413, f"text {k} has {len(t)} characters; at most "
                                        f"{limits.max_chars}")
        return texts

    def size(self, item: str) -> int:
        return len(item)

    def predict(self, texts: list[str | list[str]]) -> list[dict]:
        """Texts (split into words as ``seqlab predict`` splits them) or word lists (joined by
        spaces: the offsets refer to that text)."""
        from ..data.alignment import running_text, split_words

        split, joined = [], []
        for t in texts:
            if isinstance(t, str):
                split.append(split_words(t, cjk_characters=_cjk_words(self.meta)))
                joined.append(t)
            else:
                words = [str(w) for w in t]
                text, starts = running_text(words)
                split.append((words, [(a, a + len(w)) for a, w in zip(starts, words)]))
                joined.append(text)
        preds = predict_sentences(self.model, self.tokenizer, self.head, [w for w, _ in split],
                                  max_length=self.meta["max_length"],
                                  overlap=self.meta["window_overlap"],
                                  batch_size=self.batch_size, progress=False, dtype=self.dtype)
        return [{"text": t, "entities": entity_records(p.entities, offsets, t)}
                for t, (_, offsets), p in zip(joined, split, next(iter(preds.values())))]

    def respond(self, results: list[dict]) -> dict:
        return {"results": results}


def _chain_first(first, rest):
    yield first
    yield from rest


def entity_records(entities, offsets: Sequence[tuple[int, int]], text: str) -> list[dict]:
    """Entities as ``predict`` writes them: text, type, character ``start``/``end`` (half-open)
    and score; nested ones included, in order of position."""
    out = []
    for typ, s, e, score in entities:
        start, end = offsets[s][0], offsets[e - 1][1]
        out.append({"text": text[start:end], "type": typ, "start": start, "end": end,
                    "score": round(score, 4)})
    return out
