"""The tagging head for span QA: ``O``/``B-ANS``/``I-ANS`` over the context (a token classifier),
trained with the configured loss as NER is; the answer is the context span whose tagging is the
most probable against tagging everything ``O``, searched exactly.
"""

from __future__ import annotations

from collections import deque

import torch

from . import Head, register_head

TAG_LABELS = ["O", "B-ANS", "I-ANS"]


def tagging_scores(log_probs: torch.Tensor, offsets) -> tuple[list[float], list[float]]:
    """Turn B/I/O log-probabilities into start/end scores for :func:`best_tagged_span`.

    A span s..e scores its tagging's log-probability against tagging every token ``O``:
    ``[log B(s) - log O(s)] + sum_{k=s+1..e} [log I(k) - log O(k)]``, written as
    ``start(s) + end(e)`` with prefix sums (the no-answer tagging scores 0).
    """
    lp = log_probs.tolist()
    n = len(lp)
    cum = [0.0] * (n + 1)
    for k in range(n):
        cum[k + 1] = cum[k] + ((lp[k][2] - lp[k][0]) if offsets[k] is not None else 0.0)
    start = [lp[k][1] - lp[k][0] - cum[k + 1] for k in range(n)]
    end = [cum[k + 1] for k in range(n)]
    return start, end


def best_tagged_span(start_scores, end_scores, offsets, *, max_answer_length: int):
    """The exact best ``(score, start_char, end_char)`` of ``start(s) + end(e)`` over context
    positions ``s <= e < s + max_answer_length``, in one pass (a sliding-window maximum of the
    start scores); None when the window has no context.

    The tagging head's start and end scores mean something only as a pair (prefix sums in
    :func:`tagging_scores`), so an n-best list of each alone can miss the best span."""
    best, window = None, deque()  # context positions, their start scores decreasing
    for e, off in enumerate(offsets):
        if off is None:  # outside the context, or a piece of whitespace inside it
            continue
        while window and start_scores[window[-1]] <= start_scores[e]:
            window.pop()
        window.append(e)
        if window[0] <= e - max_answer_length:
            window.popleft()
        s = window[0]
        score = start_scores[s] + end_scores[e]
        if best is None or score > best[0]:
            best = (score, offsets[s][0], off[1])
    return best


@register_head("tagging")
class TaggingHead(Head):
    """B/I/O over the context; the best span searched exactly."""

    tasks = ("qa",)
    in_transformers = True

    def new_model(self):
        from ..models import load_token_classifier

        return load_token_classifier(self.cfg.model.encoder, TAG_LABELS)

    @classmethod
    def load_model(cls, directory, meta):
        from ..models import load_token_classifier

        return load_token_classifier(str(directory))

    def window_answer(self, outputs, row: int, feature: dict):
        n = feature["length"]
        lp = outputs["logits"][row, :n].float().log_softmax(-1).cpu()
        s_sc, e_sc = tagging_scores(lp, feature["offsets"])
        return (best_tagged_span(s_sc, e_sc, feature["offsets"],
                                 max_answer_length=self.cfg.qa.max_answer_length), 0.0)
