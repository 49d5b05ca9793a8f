"""NER as a task: sentences -> windowed features -> the head's loss; predict, decode, score, write.

The head (:mod:`seqlab.heads`) says what a window's targets are, how a batch's loss is computed
and how a sentence's windows become entities; the format of what it predicts
(:mod:`.ner_files`: a label per word scored with seqeval, or typed spans scored by exact match,
which equals seqeval's default mode on flat data) scores and writes them. The corpus is read in
:mod:`.ner_corpus`, prediction batched in :mod:`.ner_inference`.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from ..config import Config
from ..data.alignment import build_features, cjk_character_words, subwords_per_word, wrap_ids
from ..data.registry import load_files, load_named, resolve_scheme, unknown_dataset
from ..errors import ConfigError, DataError, SeqlabError, first_process
from ..files import evaluate_output, write_json
from ..heads import get_head
from ..heads.contracts import NerHeadContract
from ..metrics import format_scores
from . import EvaluateOptions, PredictOptions, Run, StudySplit, Task, register_task
from .ner_corpus import NerCorpus, class_weights, first_unseen_type, load_corpus
from .ner_files import format_of_file, gold_in_scheme, prediction_format, primary
from .ner_inference import NerPredictor, head_for_run, predict_cli, predict_sentences


@register_task("ner")
class NerTask(Task):
    """NER behind the task protocol (:class:`seqlab.tasks.Task`)."""

    primary_metric = "entity F1"
    pipeline_tag = "token-classification"
    head_contract = NerHeadContract  # what its heads implement (seqlab.heads.contracts)
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
        if cfg.data.dataset and (problem := unknown_dataset(cfg.data.dataset, "ner",
                                                             "data.train_file/dev_file/test_file")):
            raise ConfigError(f"data.dataset: {problem}")

    @classmethod
    def from_config(cls, cfg: Config) -> NerTask:
        from ..models import load_tokenizer

        corpus = load_corpus(cfg)
        task = cls(cfg, load_tokenizer(cfg.model.encoder, max_length=cfg.model.max_length), corpus)
        if task.format.nested and first_process():
            nested = sum(1 for s in corpus.splits.get("train", []) if s.overlap())
            print(f"seqlab: eval.allow_nested {cfg.eval.allow_nested}: predictions "
                  f"{'keep nested entities' if task.head.keep_nested else 'are made flat'} "
                  f"({nested} training sentences hold nested or overlapping entities)",
                  file=sys.stderr)
        return task

    def __init__(self, cfg: Config, tokenizer, corpus: NerCorpus, head=None):
        """``head``: a trained run's head (evaluation), else the configured one, new, with its
        loss built from the corpus's counts."""
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.corpus = corpus
        self.label2id = {l: i for i, l in enumerate(corpus.labels)}
        if head is not None:
            self.head, self.format = head, prediction_format(head)
            self.prediction_ext = self.format.ext
            return
        self.head = get_head(cfg.model.head)(cfg, corpus.labels)
        self.head.data_nested = any(s.overlap() for s in corpus.splits.get("train", []))
        self.head.partial = any(s.known is not None for s in corpus.splits.get("train", []))
        self.format = prediction_format(self.head)  # what the head predicts, scored and written
        self.prediction_ext = self.format.ext
        opts = dict(cfg.loss.options)
        if opts.get("weight") is not None and len(opts["weight"]) != len(corpus.labels):
            raise DataError(f"loss.weight has {len(opts['weight'])} values, expected one per label "
                            f"({len(corpus.labels)}: {', '.join(corpus.labels)})")
        if cfg.loss.class_weight:
            opts["weight"] = class_weights(self.label_counts(), cfg.loss.class_weight)
        self.head.build_loss(opts)

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
        return float(primary(result)["f1"])

    @staticmethod
    def summary(result: dict) -> dict:
        p = primary(result)
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
        if scored and all(primary(r)["f1"] == 0 and primary(r)["support"] for r in scored):
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

    def features(self, split: str):
        """A ``datasets.Dataset`` of windowed training features for ``split``."""
        import datasets

        sents = self.corpus.splits[split]
        tok, m = self.tokenizer, self.cfg.model
        rows: dict[str, list] = {}
        for sent, words in zip(sents, subwords_per_word(tok, [s.tokens for s in sents])):
            gold = self.format.gold(sent, self.corpus.scheme, self.corpus.train_scheme,
                                    self.label2id)
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
        return self.format.score_and_write(sents, by_decoding, self.corpus.scheme,
                                           self.corpus.train_scheme, out_file)

    # ----------------------------------------------------------------- the CLI

    @classmethod
    def cli_evaluate(cls, opts: EvaluateOptions, run: Run) -> int:
        return evaluate_cli(opts, run)

    @classmethod
    def cli_predict(cls, opts: PredictOptions, run: Run) -> int:
        return predict_cli(opts, run)

    @classmethod
    def predictor(cls, run: Run, opts: PredictOptions) -> NerPredictor:
        return NerPredictor(run, opts)

    # ----------------------------------------------------------------- the study

    @classmethod
    def card_metrics(cls, split_metrics: dict) -> list[tuple[str, float, str]]:
        s = primary(split_metrics)
        kind = "seqeval default" if "default" in split_metrics else "exact-match spans"
        return [("f1", 100 * s["f1"], f"entity F1 ({kind})"),
                ("precision", 100 * s["precision"], "precision"),
                ("recall", 100 * s["recall"], "recall")]

    @classmethod
    def study_metrics(cls, split_metrics: dict) -> dict:
        p = primary(split_metrics)
        return {"f1": p["f1"], "precision": p["precision"], "recall": p["recall"],
                "f1_strict": split_metrics.get("strict", p)["f1"],
                "per_type": {k: v["f1"] for k, v in p["per_type"].items()},
                "support": {k: v["support"] for k, v in p["per_type"].items()},
                "decodings": {n: s["default"]["f1"]
                              for n, s in split_metrics.get("decodings", {}).items()}}

    @classmethod
    def study_split(cls, run_dir: Path, split: str, decoding: str | None = None) -> StudySplit | None:
        import numpy as np

        path = cls.prediction_file(run_dir, split, decoding)
        if path is None:
            return None
        # per-type figures only for a decoding that metrics.json does not score
        got = format_of_file(path).read_split(path, per_type=decoding is not None)
        got.counts = np.asarray(got.counts, dtype=np.int64).reshape(-1, 3)
        return got

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


def evaluate_cli(opts: EvaluateOptions, run: Run) -> int:
    """``seqlab evaluate`` of a trained NER run: its head on a file or a named dataset's split,
    scored and written as training scores and writes."""
    from ..export import prediction_model
    from ..models import load_tokenizer

    meta, cfg = run.meta, run.config
    dtype = torch.bfloat16 if opts.bf16 else None
    fmt = prediction_format(get_head(meta.get("head", "softmax")))
    ext = fmt.ext
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
    head = head_for_run(run, meta["labels"])
    fmt.check_data({"eval": sents}, head.name)
    learnt = fmt.learnt_types(meta["labels"])
    unseen = first_unseen_type(sents, scheme, learnt)
    if unseen:
        where, typ, extra = unseen
        print(f"seqlab evaluate: warning: {where}: gold entity type {typ} was never learnt by this "
              f"model (unlearnt types: {', '.join(extra)}); their entities are scored as missed "
              "(they lower recall, and the type's F1 is 0)", file=sys.stderr)
    corpus = NerCorpus({"eval": sents}, scheme, meta["train_scheme"], meta["labels"], name)
    cfg.model.max_length, cfg.model.window_overlap = meta["max_length"], meta["window_overlap"]
    cfg.train.eval_batch_size = opts.batch_size
    task = NerTask(cfg, load_tokenizer(str(run.directory)), corpus, head=head)
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
