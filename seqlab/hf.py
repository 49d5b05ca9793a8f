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

The QA loss is :func:`seqlab.tasks.qa.pointer_loss`, the one ``seqlab train`` uses, but without
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
from .losses import build_loss
from .metrics import entity_scores
from .tasks.qa import pointer_loss


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
            # the Trainer counts both ends of each feature as items: 2 per feature
            n = None if num_items_in_batch is None else num_items_in_batch / 2
            return pointer_loss(loss_fn, start, end, labels[:, 0], labels[:, 1],
                                num_items_in_batch=n)
        logits = _get(outputs, "logits")
        if logits is None:
            raise ValueError("model outputs have neither 'logits' nor 'start_logits'")
        return loss_fn(logits, labels.to(logits.device), num_items_in_batch)

    compute_loss.loss = loss_fn  # type: ignore[attr-defined]
    return compute_loss


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
