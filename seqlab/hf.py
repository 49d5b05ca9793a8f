"""Plug seqlab's losses and entity scores into the Hugging Face ``Trainer``.

Token classification, in one line::

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                      data_collator=DataCollatorForTokenClassification(tokenizer),
                      compute_loss_func=seqlab.hf.loss_function("focal", gamma=2.0),
                      compute_metrics=seqlab.hf.entity_metrics(label_list))

The Trainer counts ``num_items_in_batch`` (labels that are not -100) over all micro-batches of
an accumulation step and passes it on; the loss then divides its sum by that number, so training
with gradient accumulation equals training on the full batch.

Span QA: the Trainer hands only a key named ``labels`` to ``compute_loss_func``, so
:class:`QACollator` packs ``start_positions``/``end_positions`` into ``labels`` of shape
``(B, 2)``, and the loss is applied to ``start_logits`` and ``end_logits`` over positions
(class dimension = positions), averaged over both ends like the model's own loss::

    args = TrainingArguments(..., label_names=["labels"])
    trainer = Trainer(model=qa_model, args=args, train_dataset=features,
                      data_collator=seqlab.hf.QACollator(tokenizer),
                      compute_loss_func=seqlab.hf.loss_function("focal", gamma=2.0))

Any head (CRF, GlobalPointer, ...) trains alike: the loss follows the model's outputs, and
:func:`features` with :class:`DataCollator` build what its loss needs::

    model = seqlab.hf.load_model("runs/my-crf")  # or a head's model class on an encoder
    rows = seqlab.hf.features(model, tokenizer, tokens, tags)   # spans for a span head
    trainer = Trainer(model=model, args=TrainingArguments(..., remove_unused_columns=False),
                      train_dataset=rows, data_collator=seqlab.hf.DataCollator(model, tokenizer),
                      compute_loss_func=seqlab.hf.loss_function())   # the head's default loss

The QA loss is :func:`seqlab.heads.pointer.pointer_loss`, the one ``seqlab train`` uses, but without
its mask: the Trainer gives ``compute_loss_func`` the outputs and labels only, not the inputs,
so positions outside the context (the question, special tokens, padding) are not masked to
``-inf`` here and compete in the softmax over positions. ``seqlab train`` with ``task: qa``
masks them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .data.alignment import pad_batch
from .metrics import entity_scores


def loss_function(name: str | None = None, *, head: str | None = None, **options) -> Callable:
    """A ``compute_loss_func`` for ``transformers.Trainer``, for any seqlab head.

    The returned callable takes ``(outputs, labels, num_items_in_batch=None)``. The head is
    ``head`` when given, else the registered head whose model returns ``outputs`` (token logits,
    a CRF's transitions, span scores, start and end logits); the loss is ``name`` (the head's
    default when None) in the form that head takes, built on the first call. Labels: ``(B, L)``
    with -100 for token heads, ``(B, types, L, L)`` for span heads (:func:`data_collator`),
    ``(B, 2)`` start and end positions for the pointer head (:class:`QACollator`).

    Raises:
        ValueError: the loss does not apply to the head, or the labels do not fit it.
    """
    from .errors import ConfigError
    from .heads import get_head, head_for_outputs

    built: dict = {}

    def compute_loss(outputs, labels, num_items_in_batch=None):
        if labels is None:
            raise ValueError("compute_loss_func got labels=None: the batch has no 'labels' key "
                             "(for QA use seqlab.hf.QACollator)")
        if not built:
            cls = get_head(head) if head else head_for_outputs(outputs)
            loss_name = name or cls.default_loss
            try:
                cls.check_loss(loss_name)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            built.update(head=cls, loss=cls.make_loss(loss_name, options))
        return built["head"].trainer_loss(built["loss"], outputs, labels, num_items_in_batch)

    if head is not None:  # fail now, not at the first batch
        cls = get_head(head)
        try:
            cls.check_loss(name or cls.default_loss)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return compute_loss


def head_of(model, *, max_length: int = 512):
    """The seqlab head of a model (``config.seqlab_head``; token classifiers without it are the
    softmax head), set up from the model's config: labels, options, tag scheme."""
    from .config import Config
    from .heads import get_head

    config = model.config
    cfg = Config()
    cfg.model.head = getattr(config, "seqlab_head", None) or "softmax"
    cfg.model.options = dict(getattr(config, "seqlab_head_options", None) or {})
    cfg.model.max_length = max_length
    cfg.data.train_scheme = getattr(config, "seqlab_scheme", "iob2")
    labels = [config.id2label[i] for i in range(config.num_labels)]
    return get_head(cfg.model.head)(cfg, labels)


def features(model, tokenizer, tokens: Sequence[Sequence[str]], gold: Sequence, *,
             max_length: int = 512, known: Sequence[Sequence[bool]] | None = None) -> list[dict]:
    """Training features for ``model``'s head from words and their gold annotation: per
    sentence a list of tags (heads that label words) or of ``(type, start, end)`` spans (span
    heads). A sentence longer than ``max_length`` subwords is cut into windows, as
    ``seqlab train`` does. Train with ``TrainingArguments(remove_unused_columns=False)`` and
    :class:`DataCollator`. ``known``: partial annotation, per sentence whether each word is
    annotated (an unknown word is no ``O``: out of the softmax head's loss, a free tag in the
    CRF's, no negative span for the span head); train the CRF then with
    ``loss_function(head="crf", partial=True)``."""
    from .data.alignment import build_features, subwords_per_word, wrap_ids

    from .models import position_limit

    limit = position_limit(tokenizer, model.config)
    max_length = min(max_length, limit) if limit else max_length
    head = head_of(model, max_length=max_length)
    from .tasks.ner_files import prediction_format

    index = {l: i for i, l in enumerate(head.labels)}
    encode = prediction_format(head).encode  # tags or spans, as the head learns
    rows = []
    for k, (words, g) in enumerate(zip(subwords_per_word(tokenizer, tokens), gold)):
        ids = encode(g, index)
        for f in build_features(words, None, max_length=max_length, overlap=max_length // 4,
                                wrap=wrap_ids(tokenizer)):
            targets = head.window_targets(f, ids, len(words))
            if known is not None:
                targets = head.mask_unknown(targets, f, list(known[k]))
            rows.append({"input_ids": f["input_ids"], **targets})
    return rows


class DataCollator:
    """Batches of :func:`features` for ``model``'s head (padding, and the head's label
    tensors). ``negatives``: for the span head, negative sampling as ``loss.negatives`` does in
    ``seqlab train`` (``floor(negatives * words) + 1`` negative spans a window, drawn uniformly
    afresh for every batch from torch's generator); the weighted draw needs the model's scores
    and is ``seqlab train``'s only."""

    def __init__(self, model, tokenizer, *, negatives: float | None = None):
        self.head = head_of(model)
        self.pad_id = tokenizer.pad_token_id
        if negatives is not None and not self.head.samples_negatives:
            raise ValueError(f"negatives: the {self.head.name} head has no negative spans to "
                             "sample (it applies to global_pointer)")
        if negatives is not None and not negatives > 0:
            raise ValueError(f"negatives: expected a positive ratio, got {negatives}")
        self.negatives = negatives

    def __call__(self, rows: list[dict]) -> dict:
        batch = self.head.collate(rows, self.pad_id)
        words = batch.pop("words", None)
        if words is not None:  # the span head: unknown spans resolved, negatives sampled
            from .heads.global_pointer import resolve_unknown, sample_negatives

            batch["labels"] = (resolve_unknown(batch["labels"]) if self.negatives is None else
                               sample_negatives(batch["labels"], words, self.negatives))
        return batch


def load_model(directory: str):
    """A model trained by seqlab (any head), loaded from its directory."""
    import json
    from pathlib import Path

    from .export import _load_torch_model

    meta = json.loads((Path(directory) / "seqlab.json").read_text(encoding="utf-8"))
    return _load_torch_model(Path(directory), meta)


class QACollator:
    """Pad QA features (:func:`seqlab.data.alignment.pad_batch`) and pack
    ``start_positions``/``end_positions`` into ``labels (B, 2)``."""

    def __init__(self, tokenizer):
        self.pad_id = tokenizer.pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        keep = ("input_ids", "token_type_ids", "start_positions", "end_positions")
        batch = pad_batch([{k: f[k] for k in keep if k in f} for f in features], self.pad_id)
        starts, ends = batch.pop("start_positions", None), batch.pop("end_positions", None)
        if starts is not None and ends is not None:
            batch["labels"] = torch.stack([starts, ends], dim=1)
        return batch


def entity_metrics(label_list: Sequence[str], *, mode: str = "default",
                   scheme: str = "iob2") -> Callable:
    """A ``compute_metrics`` turning ``EvalPrediction`` into seqeval entity scores.

    Positions labelled -100 (special tokens, non-first subwords, padding) are dropped.
    Returns ``precision``, ``recall``, ``f1`` and ``f1_<TYPE>`` for each type.
    """
    labels = list(label_list)

    def compute_metrics(eval_pred) -> dict[str, float]:
        preds, refs = eval_pred.predictions, eval_pred.label_ids
        if isinstance(preds, tuple):
            preds = preds[0]
        preds = np.asarray(preds)
        if preds.ndim == 3:
            preds = preds.argmax(-1)
        refs = np.asarray(refs)
        gold, pred = [], []
        for p_row, r_row in zip(preds, refs):
            keep = r_row != -100
            gold.append([labels[i] for i in r_row[keep]])
            pred.append([labels[i] for i in p_row[keep]])
        s = entity_scores(gold, pred, mode=mode, scheme=scheme)
        out = {"precision": s["precision"], "recall": s["recall"], "f1": s["f1"]}
        out.update({f"f1_{k}": v["f1"] for k, v in s["per_type"].items()})
        return out

    return compute_metrics
