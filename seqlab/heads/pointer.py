"""The pointer head for span QA: a start and an end score per position (transformers'
``AutoModelForQuestionAnswering``); the answer is the best valid pair.

Loss: the configured loss over positions (class dimension = positions) for the start and for the
end, averaged over the two, as the model's own QA loss; every position outside the context but
CLS is masked to ``-inf`` (no class at all). A window without the answer points at CLS.
"""

from __future__ import annotations

import math

import torch

from ..data.alignment import IGNORE
from . import Head, model_inputs, register_head


def pointer_loss(loss_fn, start_logits: torch.Tensor, end_logits: torch.Tensor,
                 start_positions: torch.Tensor, end_positions: torch.Tensor, *,
                 allowed: torch.Tensor | None = None, num_items_in_batch=None) -> torch.Tensor:
    """The pointer head's loss: ``loss_fn`` over positions for the start and for the end,
    averaged over the two.

    ``allowed`` ``(B, L)``: positions that can be answers (the context and CLS); the others get
    a ``-inf`` logit, so they are no classes at all. Without it (the Trainer gives the loss no
    inputs) every position competes, special tokens and the question included.
    With ``num_items_in_batch`` (features in the whole accumulated batch) the two sums are
    divided by twice that number: gradient accumulation then equals the full batch.
    """
    start, end = start_logits.float(), end_logits.float()
    if allowed is not None:
        start = start.masked_fill(~allowed, -math.inf)
        end = end.masked_fill(~allowed, -math.inf)
    if num_items_in_batch is None:
        return (loss_fn(start, start_positions) + loss_fn(end, end_positions)) / 2
    n = 2 * num_items_in_batch
    return loss_fn(start, start_positions, n) + loss_fn(end, end_positions, n)


def best_span(start_scores, end_scores, offsets, *, n_best: int, max_answer_length: int):
    """Best ``(score, start_char, end_char)`` with end >= start, at most ``max_answer_length``
    subwords, both inside the context; None when the window has no context."""
    ctx = [k for k, o in enumerate(offsets) if o is not None]
    if not ctx:
        return None

    def search(starts, ends):
        best = None
        for s in starts:
            for e in ends:
                if e < s or e - s + 1 > max_answer_length or offsets[e] is None:
                    continue
                score = start_scores[s] + end_scores[e]
                if best is None or score > best[0]:
                    best = (score, offsets[s][0], offsets[e][1])
        return best

    best = search(sorted(ctx, key=lambda k: -start_scores[k])[:n_best],
                  sorted(ctx, key=lambda k: -end_scores[k])[:n_best])
    if best is None:  # no valid pair among the n-best: search every valid pair
        best = search(ctx, ctx)
    return best


@register_head("pointer")
class PointerHead(Head):
    """Start and end scores over positions; the best valid pair of the ``qa.n_best`` of each."""

    tasks = ("qa",)
    in_transformers = True
    output_names = ("start_logits", "end_logits")

    def new_model(self):
        from ..models import load_question_answering

        return load_question_answering(self.cfg.model.encoder)

    @classmethod
    def load_model(cls, directory, meta):
        from ..models import load_question_answering

        return load_question_answering(str(directory))

    def loss(self, model, batch, num_items_in_batch=None):
        out = model(**model_inputs(batch))
        # positions outside the context (question, specials, padding) cannot be answers;
        # CLS (position 0) stays for windows without the answer
        allowed = batch["labels"] != IGNORE
        allowed[:, 0] = True
        return pointer_loss(self.loss_fn, out.start_logits, out.end_logits, batch["start_positions"],
                            batch["end_positions"], allowed=allowed,
                            num_items_in_batch=num_items_in_batch)

    def count_items(self, batch):
        return torch.tensor(batch["input_ids"].shape[0])

    def window_answer(self, outputs, row: int, feature: dict):
        """``(best (score, start_char, end_char) or None, the no-answer score)`` of a window."""
        q, n = self.cfg.qa, feature["length"]
        s_sc = outputs["start_logits"][row, :n].float().cpu().tolist()
        e_sc = outputs["end_logits"][row, :n].float().cpu().tolist()
        return (best_span(s_sc, e_sc, feature["offsets"], n_best=q.n_best,
                          max_answer_length=q.max_answer_length), s_sc[0] + e_sc[0])

    @classmethod
    def accepts_outputs(cls, outputs) -> bool:
        return "start_logits" in outputs and outputs["start_logits"] is not None

    @classmethod
    def trainer_loss(cls, loss_fn, outputs, labels, num_items_in_batch=None):
        start, end = outputs["start_logits"], outputs["end_logits"]
        if labels.dim() != 2 or labels.shape[-1] != 2:
            raise ValueError(f"QA labels have shape {tuple(labels.shape)}, expected (batch, 2): "
                             "start and end positions (use seqlab.hf.QACollator)")
        labels = labels.to(start.device)
        # the Trainer counts both ends of each feature as items: 2 per feature
        n = None if num_items_in_batch is None else num_items_in_batch / 2
        return pointer_loss(loss_fn, start, end, labels[:, 0], labels[:, 1], num_items_in_batch=n)
