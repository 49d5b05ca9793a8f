"""NER as a task: sentences -> windowed features -> logits -> loss; decode, score, write."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import Config
from ..data.alignment import (IGNORE, build_features, merge_windows, pad_batch, split_words,
                              subwords_per_word)
from ..data.conll import Sentence, write_conll
from ..data.registry import load_files, load_named, resolve_scheme
from ..data.schemes import label_set, spans_to_tags, tags_to_spans
from ..errors import DataError, SeqlabError
from ..files import (AtomicOutput, blocks, check_input_files, check_output_file, evaluate_output,
                     iter_lines, write_json)
from ..losses import build_loss
from ..metrics import entity_scores, format_scores

PREDICT_BLOCK_LINES = 2048  # `seqlab predict` reads, predicts and writes this many lines at a time


@dataclass
class NerCorpus:
    """Splits of original sentences, their scheme, and the label set the model learns."""

    splits: dict[str, list[Sentence]]
    scheme: str          # the files' scheme
    train_scheme: str    # the model's scheme
    labels: list[str]
    name: str = "files"


def _types(sentences: Sequence[Sentence], scheme: str) -> set[str]:
    return {t for s in sentences for t, _, _ in tags_to_spans(s.tags, scheme)}


def first_unseen_type(sentences: Sequence[Sentence], scheme: str, known: set[str]
                      ) -> tuple[str, str, list[str]] | None:
    """``(file:line of its first tag, the type, every unseen type)`` for the first entity whose
    type is not in ``known``, or None."""
    extra = sorted(_types(sentences, scheme) - set(known))
    if not extra:
        return None
    for s in sentences:
        for typ, start, _ in tags_to_spans(s.tags, scheme):
            if typ in extra:
                return s.where(start), typ, extra
    return None


def load_corpus(cfg: Config, labels: list[str] | None = None) -> NerCorpus:
    """Read the configured splits, resolve the scheme, build the label set.

    Raises:
        DataError: no data configured, a missing file, or a dev/test entity type absent from train.
    """
    d = cfg.data
    if d.dataset and (d.train_file or d.dev_file or d.test_file):
        raise DataError("give either data.dataset or data.train_file/dev_file/test_file, not both")
    if d.dataset:
        splits, spec = load_named(d.dataset, d.data_dir)
        declared = spec.scheme if d.scheme == "auto" else d.scheme
        name = d.dataset
    elif d.train_file or d.dev_file or d.test_file:
        splits = load_files(d.train_file, d.dev_file, d.test_file, tag_column=d.tag_column)
        declared, name = d.scheme, Path(d.train_file or d.dev_file or d.test_file).name
    else:
        raise DataError("no data: set data.dataset (e.g. conll2003) or data.train_file")
    if d.limit and "train" in splits:
        splits["train"] = splits["train"][: d.limit]
    if d.eval_limit:
        for split in ("dev", "test"):
            if split in splits:
                splits[split] = splits[split][: d.eval_limit]
    scheme = resolve_scheme(splits, declared)
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
        labels = label_set(sorted(train_types), cfg.data.train_scheme)
    return NerCorpus(splits, scheme, cfg.data.train_scheme, labels, name)


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
    return spans_to_tags(tags_to_spans(sent.tags, source), len(sent.tags), target)


class NerTask:
    """NER behind the task protocol (:class:`seqlab.tasks.Task`)."""

    primary_metric = "entity F1"
    prediction_ext = "conll"

    @classmethod
    def from_config(cls, cfg: Config) -> NerTask:
        from ..models import load_tokenizer

        corpus = load_corpus(cfg)
        return cls(cfg, load_tokenizer(cfg.model.encoder), corpus)

    def new_model(self):
        from ..models import load_token_classifier

        return load_token_classifier(self.cfg.model.encoder, self.corpus.labels)

    def score(self, result: dict) -> float:
        return float(result["default"]["f1"])

    def report(self, result: dict) -> str:
        lines = []
        for split in ("dev", "test"):
            if split in result:
                r = result[split]
                lines.append(format_scores(r["default"], f"{split} (seqeval default mode)"))
                lines.append(f"{split} entity F1: {100 * r['default']['f1']:.2f} "
                             f"(strict {100 * r['strict']['f1']:.2f})")
        return "\n".join(lines)

    def count_items(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return (batch["labels"] != IGNORE).sum()

    # the CLI's paths, defined at the end of this module
    cli_evaluate = staticmethod(lambda args, meta, cfg: _evaluate_cli(args, meta, cfg))
    cli_predict = staticmethod(lambda args, meta, cfg: _predict_cli(args, meta, cfg))

    def __init__(self, cfg: Config, tokenizer, corpus: NerCorpus):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.corpus = corpus
        self.label2id = {l: i for i, l in enumerate(corpus.labels)}
        opts = dict(cfg.loss.options)
        if "weight" in opts and opts["weight"] is not None and len(opts["weight"]) != len(corpus.labels):
            raise DataError(f"loss.weight has {len(opts['weight'])} values, expected one per label "
                            f"({len(corpus.labels)}: {', '.join(corpus.labels)})")
        if cfg.loss.class_weight:
            opts["weight"] = class_weights(self.label_counts(), cfg.loss.class_weight)
        self.loss_fn = build_loss(cfg.loss.name, **opts)

    def label_counts(self) -> list[int]:
        """How often each label is a word's gold tag in the training split (in the model's
        scheme)."""
        counts = [0] * len(self.corpus.labels)
        for s in self.corpus.splits.get("train", []):
            for t in gold_in_scheme(s, self.corpus.scheme, self.corpus.train_scheme):
                counts[self.label2id[t]] += 1
        return counts

    def has_split(self, split: str) -> bool:
        return bool(self.corpus.splits.get(split))

    @staticmethod
    def summary(result: dict) -> dict:
        d, s = result["default"], result["strict"]
        return {"precision": d["precision"], "recall": d["recall"], "f1": d["f1"],
                "f1_strict": s["f1"]}

    def save_extra(self, directory: Path) -> None:
        from .. import __version__

        write_json(directory / "seqlab.json", {
            "seqlab_version": __version__, "task": "ner", "dataset": self.corpus.name,
            "scheme": self.corpus.scheme, "train_scheme": self.corpus.train_scheme,
            "labels": self.corpus.labels, "max_length": self.cfg.model.max_length,
            "window_overlap": self.cfg.model.window_overlap})

    # ----------------------------------------------------------------- features

    def features(self, split: str):
        """A ``datasets.Dataset`` of windowed training features for ``split``."""
        import datasets

        sents = self.corpus.splits[split]
        table = datasets.Dataset.from_dict({
            "tokens": [s.tokens for s in sents],
            "tags": [gold_in_scheme(s, self.corpus.scheme, self.corpus.train_scheme) for s in sents],
        })
        tok, m = self.tokenizer, self.cfg.model

        def encode(batch):
            out = {"input_ids": [], "labels": [], "length": []}
            per_word = subwords_per_word(tok, batch["tokens"])
            for words, tags in zip(per_word, batch["tags"]):
                ids = [self.label2id[t] for t in tags]
                for f in build_features(words, ids, max_length=m.max_length,
                                        overlap=m.window_overlap, cls_id=tok.cls_token_id,
                                        sep_id=tok.sep_token_id):
                    out["input_ids"].append(f["input_ids"])
                    out["labels"].append(f["labels"])
                    out["length"].append(len(f["input_ids"]))
            return out

        return table.map(encode, batched=True, batch_size=1000, remove_columns=table.column_names,
                         desc=f"tokenising {split}", load_from_cache_file=False)

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return pad_batch(rows, self.tokenizer.pad_token_id)

    def compute_loss(self, model, batch: dict[str, torch.Tensor], *,
                     num_items_in_batch=None) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return self.loss_fn(logits, batch["labels"], num_items_in_batch)

    # ----------------------------------------------------------------- evaluation

    def evaluate(self, model, split: str, *, device=None, out_file: Path | None = None,
                 progress: bool = True, dtype: torch.dtype | None = None,
                 accelerator=None) -> dict:
        """Predict every word of ``split`` (windows merged) and score against the original gold.

        ``dtype``: see :func:`predict_words`; ``accelerator``: see :meth:`Task.evaluate`."""
        from . import gather_shards, shard_of

        sents = self.corpus.splits[split]
        mine = shard_of(len(sents), accelerator)
        preds = predict_words(model, self.tokenizer, [sents[i].tokens for i in mine],
                              max_length=self.cfg.model.max_length,
                              overlap=self.cfg.model.window_overlap,
                              batch_size=self.cfg.train.eval_batch_size, device=device,
                              desc=f"evaluating {split}", progress=progress, dtype=dtype)
        preds = gather_shards(mine, preds, len(sents), accelerator)
        if accelerator is not None and not accelerator.is_main_process:
            out_file = None
        id2label = self.corpus.labels
        pred_tags = [[id2label[i] for i, _ in p] for p in preds]
        probs = [[q for _, q in p] for p in preds]
        return score_and_write(sents, pred_tags, self.corpus.scheme, self.corpus.train_scheme,
                               out_file, probs=probs)


def score_and_write(sents: Sequence[Sentence], pred_tags: list[list[str]], scheme: str,
                    train_scheme: str, out_file: Path | None, *,
                    probs: list[list[float]] | None = None) -> dict:
    """Score predicted per-word tags against the gold sentences and write the predictions file.

    The model's tags are read leniently (an ``I-X`` after ``O`` opens an entity, as in
    :func:`decode_entities`) and written back well-formed in ``train_scheme``: both modes score
    those tags against the gold converted to ``train_scheme``, so every figure can be recomputed
    from the written file with seqeval alone.

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
    return result


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of features of one length, longest first.

    Features of equal length need no padding and no attention mask, so no position of a batch
    is wasted. A batch holds at most ``batch_size`` rows, or more rows of short features, up to
    ``batch_size * 32`` tokens.
    """
    order = sorted(range(len(lengths)), key=lambda k: -lengths[k])
    batches: list[list[int]] = []
    for k in order:
        if batches:
            last = batches[-1]
            n = lengths[last[0]]
            rows = max(batch_size, (batch_size * 32) // max(n, 1))
            if lengths[k] == n and len(last) < rows:
                last.append(k)
                continue
        batches.append([k])
    return batches


@torch.inference_mode()
def predict_words(model, tokenizer, sentences: Sequence[Sequence[str]], *, max_length: int,
                  overlap: int, batch_size: int = 64, device=None, desc: str = "predicting",
                  progress: bool = True, dtype: torch.dtype | None = None
                  ) -> list[list[tuple[int, float]]]:
    """``(label id, probability)`` for every word of every sentence, windows merged.

    Features are batched by length (:func:`length_batches`), so no compute goes to padding.
    ``dtype=torch.bfloat16`` runs the encoder under autocast (faster where the hardware has
    bf16 units, at a small cost in precision); the default is the model's own precision.
    """
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device

    def forward(ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids).logits[keep]

    per_word = subwords_per_word(tokenizer, sentences) if sentences else []
    feats = []  # (sentence, window, feature)
    windows: list[list[tuple[int, int]]] = []
    for si, words in enumerate(per_word):
        fs = build_features(words, None, max_length=max_length, overlap=overlap,
                            cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id)
        windows.append([tuple(f["window"]) for f in fs])
        feats.extend((si, wi, f) for wi, f in enumerate(fs))
    batches = length_batches([len(f["input_ids"]) for _, _, f in feats], batch_size)
    values: list[list[dict[int, tuple[int, float]]]] = [[{} for _ in w] for w in windows]
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext())
    bar = tqdm(total=len(sentences), desc=desc, unit="sent", disable=not progress, leave=False)
    with autocast:
        for idx in batches:
            chunk = [feats[k] for k in idx]
            ids = torch.tensor([f["input_ids"] for _, _, f in chunk], dtype=torch.long)
            keep = torch.tensor([f["word_index"] for _, _, f in chunk]) >= 0
            # logits at the first subwords only, in row-major order
            logits = forward(ids.to(device), keep.to(device)).float()
            prob, label = logits.softmax(-1).max(-1)
            flat = iter(zip(label.cpu().tolist(), prob.cpu().tolist()))
            for si, wi, f in chunk:
                for w in f["word_index"]:
                    if w >= 0:
                        values[si][wi][w] = next(flat)
            bar.update(sum(1 for si, wi, _ in chunk if wi == 0))
    bar.close()
    if was_training:
        model.train()
    return [merge_windows(len(sentences[si]), windows[si], values[si]) for si in range(len(sentences))]


def decode_entities(words: Sequence[str], preds: Sequence[tuple[int, float]], labels: Sequence[str],
                    scheme: str, offsets: Sequence[tuple[int, int]] | None = None,
                    text: str | None = None) -> list[dict]:
    """Entities from word predictions: type, word span, character span and a score (the mean
    probability of the entity's words)."""
    tags = [labels[i] for i, _ in preds]
    out = []
    for typ, start, end in tags_to_spans(tags, scheme):
        score = sum(p for _, p in preds[start:end]) / (end - start)
        ent = {"type": typ, "word_start": start, "word_end": end, "score": round(score, 4)}
        if offsets is not None:
            ent["start"], ent["end"] = offsets[start][0], offsets[end - 1][1]
            ent["text"] = text[ent["start"]: ent["end"]] if text is not None else " ".join(words[start:end])
        else:
            ent["text"] = " ".join(words[start:end])
        out.append(ent)
    return out


# --------------------------------------------------------------------------- the CLI's paths


def _evaluate_cli(args, meta: dict, cfg: Config) -> int:
    from ..data.schemes import split_tag
    from ..export import prediction_model
    from ..models import load_tokenizer

    dtype = torch.bfloat16 if args.bf16 else None
    if args.dataset:
        name = f"{args.dataset}-{args.split}"
        out = evaluate_output(args, name, "conll")
        splits, spec = load_named(args.dataset, args.data_dir)
        if args.split not in splits:
            raise SeqlabError(f"dataset {args.dataset!r} has no split {args.split!r}; "
                              f"it has {', '.join(splits)}")
        sents = splits[args.split]
        scheme = resolve_scheme({args.split: sents}, spec.scheme)
    else:
        name = Path(args.file).stem
        out = evaluate_output(args, name, "conll")
        sents = load_files(None, None, args.file, tag_column=cfg.data.tag_column)["test"]
        scheme = resolve_scheme({"test": sents}, "auto")
    learnt = {split_tag(label)[1] for label in meta["labels"]} - {None}
    unseen = first_unseen_type(sents, scheme, learnt)
    if unseen:
        where, typ, extra = unseen
        print(f"seqlab evaluate: warning: {where}: gold entity type {typ} was never learnt by this "
              f"model (unlearnt types: {', '.join(extra)}); their entities are scored as missed "
              "(they lower recall, and the type's F1 is 0)", file=sys.stderr)
    corpus = NerCorpus({"eval": sents}, scheme, meta["train_scheme"], meta["labels"], name)
    cfg.model.max_length, cfg.model.window_overlap = meta["max_length"], meta["window_overlap"]
    cfg.train.eval_batch_size = args.batch_size
    task = NerTask(cfg, load_tokenizer(args.model_dir), corpus)
    model = prediction_model(args, meta)
    result = task.evaluate(model, "eval", out_file=out, progress=not args.no_progress, dtype=dtype)
    print(format_scores(result["default"], f"{name}: seqeval default mode (conlleval)"))
    print()
    print(format_scores(result["strict"], f"{name}: seqeval strict mode ({meta['train_scheme']})"))
    print(f"predictions written to {out} (scored: {result['scored_columns']})")
    return 0


def _predict_cli(args, meta: dict, cfg: Config) -> int:
    from ..export import prediction_model
    from ..models import load_tokenizer

    if args.question or args.context_file:
        raise SeqlabError("--question and --context-file are for QA models; this one is NER")
    dtype = torch.bfloat16 if args.bf16 else None
    check_input_files(args.files)  # before any work
    out_path = check_output_file(args.output)
    tokenizer = load_tokenizer(args.model_dir)
    model = prediction_model(args, meta)
    with AtomicOutput(out_path) as out:
        # blocks of lines: bounded memory, and output from the first block on
        for block in blocks(iter_lines(args.files), PREDICT_BLOCK_LINES):
            texts = [text for text, _, _ in block]
            split = [split_words(t) for t in texts]
            preds = predict_words(model, tokenizer, [w for w, _ in split],
                                  max_length=meta["max_length"], overlap=meta["window_overlap"],
                                  batch_size=args.batch_size, progress=False, dtype=dtype)
            for text, (words, offsets), pred in zip(texts, split, preds):
                ents = decode_entities(words, pred, meta["labels"], meta["train_scheme"], offsets,
                                       text)
                ents = [{k: e[k] for k in ("text", "type", "start", "end", "score")} for e in ents]
                out.write(json.dumps({"text": text, "entities": ents}, ensure_ascii=False) + "\n")
            out.flush()
    return 0

