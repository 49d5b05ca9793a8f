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

Positions are not masked to the context on this path (the Trainer gives the loss no attention
mask); ``seqlab train`` with ``task: qa`` masks non-context positions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .losses import build_loss
from .metrics import entity_scores


def _get(outputs, key: str):
    if isinstance(outputs, dict) or hasattr(outputs, "keys"):
        return outputs[key] if key in outputs.keys() else None
    return getattr(outputs, key, None)


def loss_function(name: str = "ce", **options) -> Callable:
    """A ``compute_loss_func`` for ``transformers.Trainer`` built from the loss registry.

    The returned callable takes ``(outputs, labels, num_items_in_batch=None)``: token
    classification when ``outputs`` has ``logits`` (labels ``(B, L)`` with -100), span QA when
    it has ``start_logits``/``end_logits`` (labels ``(B, 2)``, from :class:`QACollator`).
    """
    loss_fn = build_loss(name, **options)

    def compute_loss(outputs, labels, num_items_in_batch=None):
        if labels is None:
            raise ValueError("compute_loss_func got labels=None: the batch has no 'labels' key "
                             "(for QA use seqlab.hf.QACollator)")
        start = _get(outputs, "start_logits")
        if start is not None:
            end = _get(outputs, "end_logits")
            if labels.dim() != 2 or labels.shape[-1] != 2:
                raise ValueError(f"QA labels have shape {tuple(labels.shape)}, expected (batch, 2): "
                                 "start and end positions (use seqlab.hf.QACollator)")
            labels = labels.to(start.device)
            if num_items_in_batch is None:
                # the mean over both ends, as the model's own loss
                return (loss_fn(start, labels[:, 0]) + loss_fn(end, labels[:, 1])) / 2
            return loss_fn(start, labels[:, 0], num_items_in_batch) + \
                loss_fn(end, labels[:, 1], num_items_in_batch)
        logits = _get(outputs, "logits")
        if logits is None:
            raise ValueError("model outputs have neither 'logits' nor 'start_logits'")
        return loss_fn(logits, labels.to(logits.device), num_items_in_batch)

    compute_loss.loss = loss_fn  # type: ignore[attr-defined]
    return compute_loss


class QACollator:
    """Pad QA features and pack ``start_positions``/``end_positions`` into ``labels (B, 2)``."""

    def __init__(self, tokenizer, pad_to_multiple_of: int | None = None):
        from transformers import DataCollatorWithPadding

        self.pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def __call__(self, features: list[dict]) -> dict:
        feats = [dict(f) for f in features]
        starts = [f.pop("start_positions", None) for f in feats]
        ends = [f.pop("end_positions", None) for f in feats]
        for f in feats:
            for key in [k for k in f if k not in ("input_ids", "attention_mask", "token_type_ids")]:
                f.pop(key)
        batch = self.pad(feats)
        if all(s is not None for s in starts):
            batch["labels"] = torch.tensor([[int(s), int(e)] for s, e in zip(starts, ends)])
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
