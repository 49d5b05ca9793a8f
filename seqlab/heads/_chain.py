r"""Linear chains over a sentence's words: the tag scheme's allowed transitions, the CRF's log-
likelihood, Viterbi decoding and per-word marginals, vectorised over a batch.

Scores ``(B, W, C)`` (emissions, or log-probabilities), a mask ``(B, W)`` of real words (a prefix
of each row), transitions ``(C, C)`` from the row's tag to the column's, and start and end
scores ``(C,)``. A path's score is

.. math:: s(y) = \mathrm{start}_{y_1} + \sum_t E_{t, y_t} + \sum_{t>1} T_{y_{t-1}, y_t}
          + \mathrm{end}_{y_n}

and its probability :math:`e^{s(y)} / Z` with :math:`Z` summed over every path (the forward
algorithm, in log space).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..data.schemes import split_tag

# the score of a transition the scheme forbids: finite, so that no sum of logsumexp over
# only forbidden paths gives NaN, and far below any real path's score
IMPOSSIBLE = -1.0e4


def allowed_transitions(labels: list[str], scheme: str) -> tuple[Tensor, Tensor, Tensor]:
    """Which tags may start a sentence, follow each tag, and end a sentence in ``scheme``.

    IOB2: ``I-X`` only after ``B-X`` or ``I-X`` (so never first). BIOES: ``I-X`` and ``E-X`` only
    after ``B-X`` or ``I-X``; ``B-``, ``S-`` and ``O`` only after ``O``, ``E-`` or ``S-`` (or first);
    a sentence ends with ``O``, ``E-`` or ``S-``.

    Returns:
        ``(start (C,), transitions (C, C), end (C,))`` booleans; ``transitions[i, j]``: tag j
        may follow tag i.
    """
    parsed = [split_tag(l) for l in labels]
    n = len(labels)
    trans = torch.ones(n, n, dtype=torch.bool)
    start = torch.ones(n, dtype=torch.bool)
    end = torch.ones(n, dtype=torch.bool)
    for j, (pj, tj) in enumerate(parsed):
        inside = pj in ("I", "E")
        if scheme == "iob2" and pj == "E" or scheme == "iob2" and pj == "S":
            raise ValueError(f"label {labels[j]} is not IOB2")
        if inside:
            start[j] = False
            for i, (pi, ti) in enumerate(parsed):
                trans[i, j] = pi in ("B", "I") and ti == tj
        elif scheme == "bioes":
            for i, (pi, _) in enumerate(parsed):
                trans[i, j] = pi in ("O", "E", "S")
        if scheme == "bioes":
            end[j] = pj in ("O", "E", "S")
    return start, trans, end


def _masked(scores: Tensor, allowed: Tensor | None, fill: float) -> Tensor:
    return scores if allowed is None else scores.masked_fill(~allowed.to(scores.device), fill)


def log_partition(emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor,
                  end: Tensor) -> Tensor:
    """``log Z`` per row ``(B,)``: the forward algorithm over the masked prefix. ``start`` and
    ``end`` may also be given per row, ``(B, C)``."""
    alpha = start + emissions[:, 0]                                     # (B, C)
    for t in range(1, emissions.shape[1]):
        step = torch.logsumexp(alpha.unsqueeze(2) + transitions, dim=1) + emissions[:, t]
        alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
    return torch.logsumexp(alpha + end, dim=1)


def path_score(emissions: Tensor, tags: Tensor, mask: Tensor, transitions: Tensor, start: Tensor,
               end: Tensor) -> Tensor:
    """The score of the paths ``tags`` ``(B, W)`` (masked positions may hold any tag)."""
    B, _, C = emissions.shape
    start, end = start.expand(B, C), end.expand(B, C)
    m = mask.to(emissions.dtype)
    tags = tags.masked_fill(~mask, 0)
    emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)            # (B, W)
    score = start.gather(1, tags[:, :1]).squeeze(1) + (emit * m).sum(1)
    trans = transitions[tags[:, :-1], tags[:, 1:]]                      # (B, W-1)
    score = score + (trans * m[:, 1:]).sum(1)
    last = tags.gather(1, (mask.sum(1) - 1).clamp_min(0).unsqueeze(1))
    return score + end.gather(1, last).squeeze(1)


UNKNOWN = -1  # a word's tag in partial annotation: any tag may stand there (never -100)


def consistent_log_partition(emissions: Tensor, tags: Tensor, mask: Tensor, transitions: Tensor,
                             start: Tensor, end: Tensor) -> Tensor:
    """``log`` of the summed scores of every path that agrees with ``tags`` ``(B, W)`` where
    they are known (:data:`UNKNOWN` elsewhere): the forward algorithm with the other tags'
    emissions of a known word at :data:`IMPOSSIBLE`. With every tag known it is the gold
    path's score."""
    C = emissions.shape[2]
    free = (tags < 0).unsqueeze(2)
    gold = torch.nn.functional.one_hot(tags.clamp_min(0), C).bool()
    return log_partition(emissions.masked_fill(~(free | gold), IMPOSSIBLE), mask, transitions,
                         start, end)


def crf_nll(emissions: Tensor, tags: Tensor, mask: Tensor, transitions: Tensor, start: Tensor,
            end: Tensor, *, partial: bool = False) -> Tensor:
    r"""Negative log-likelihood :math:`\log Z - s(y)` of each row's gold path ``(B,)``, in
    float32 (float64 stays float64); a row with no real word gives 0.

    ``partial``: ``tags`` may hold :data:`UNKNOWN`; the likelihood is then that of every path
    consistent with the known tags (the partial, or fuzzy, CRF of Tsuboi et al., 2008):
    :math:`\log Z - \log \sum_{y \sim \text{known}} e^{s(y)}`, exact by dynamic programming."""
    dtype = torch.float64 if emissions.dtype == torch.float64 else torch.float32
    e, tr, st, en = (x.to(dtype) for x in (emissions, transitions, start, end))
    gold = (consistent_log_partition(e, tags, mask, tr, st, en) if partial else
            path_score(e, tags, mask, tr, st, en))
    nll = log_partition(e, mask, tr, st, en) - gold
    return nll.masked_fill(~mask.any(1), 0.0)


def viterbi(scores: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
            ) -> Tensor:
    """The best path of each row ``(B, W)`` (0 at masked positions)."""
    B, W, C = scores.shape
    best = start + scores[:, 0]
    back = []
    for t in range(1, W):
        cand = best.unsqueeze(2) + transitions                          # (B, prev, next)
        value, arg = cand.max(dim=1)
        step = value + scores[:, t]
        keep = mask[:, t].unsqueeze(1)
        best = torch.where(keep, step, best)
        # a masked step points each tag back at itself, so the backtrack passes through it
        back.append(torch.where(keep, arg, torch.arange(C, device=scores.device).expand(B, C)))
    tag = (best + end).argmax(1)
    path = [tag]
    for arg in reversed(back):
        tag = arg.gather(1, tag.unsqueeze(1)).squeeze(1)
        path.append(tag)
    path.reverse()
    return torch.stack(path, 1).masked_fill(~mask, 0)


def marginals(emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
              ) -> Tensor:
    """``P(y_t = c)`` per word and tag ``(B, W, C)`` (forward-backward in log space)."""
    B, W, C = emissions.shape
    alphas = [start + emissions[:, 0]]
    for t in range(1, W):
        step = torch.logsumexp(alphas[-1].unsqueeze(2) + transitions, dim=1) + emissions[:, t]
        alphas.append(torch.where(mask[:, t].unsqueeze(1), step, alphas[-1]))
    # beta at each row's last real word is the end score; before it, the backward recursion
    lengths = mask.sum(1)
    beta = end.expand(B, C).clone()
    betas = [beta] * W
    for t in range(W - 2, -1, -1):
        step = torch.logsumexp(transitions + (emissions[:, t + 1] + betas[t + 1]).unsqueeze(1),
                               dim=2)
        is_last = (lengths - 1 == t).unsqueeze(1)
        inside = mask[:, t + 1].unsqueeze(1)
        betas[t] = torch.where(inside, step, torch.where(is_last, end.expand(B, C), betas[t + 1]))
    alpha, beta = torch.stack(alphas, 1), torch.stack(betas, 1)
    log_z = torch.logsumexp(alpha.gather(1, (lengths - 1).clamp_min(0).view(B, 1, 1)
                                         .expand(B, 1, C)).squeeze(1) + end, dim=1)
    return (alpha + beta - log_z.view(B, 1, 1)).exp() * mask.unsqueeze(2)


def constrained(transitions: Tensor, start: Tensor, end: Tensor, allowed, fill: float = IMPOSSIBLE
                ) -> tuple[Tensor, Tensor, Tensor]:
    """The three score tensors with the scheme's forbidden entries set to ``fill``."""
    a_start, a_trans, a_end = allowed
    return (_masked(transitions, a_trans, fill), _masked(start, a_start, fill),
            _masked(end, a_end, fill))
