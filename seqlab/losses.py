r"""Token-level losses for imbalanced sequence labelling.

Every loss comes in three pieces: a functional form, an :class:`torch.nn.Module` wrapping it, and
an entry in a name registry (:func:`build_loss`, :func:`available_losses`).

Two families of inputs are accepted:

* **multiclass**: logits ``(*, C)`` with the class dimension last and an integer target ``(*)``
  holding a class index in ``[0, C)`` or ``ignore_index``;
* **binary / multi-label** (``binary=True``): logits and a target of the same shape, the target
  holding 0/1 (or a soft value in [0, 1]) or ``ignore_index``.

All of them share the keywords ``weight`` (per-class weights, ``None`` = off), ``ignore_index``,
``reduction`` (``"none"``, ``"mean"``, ``"sum"``) and ``num_items_in_batch``. ``"mean"`` is what
:func:`torch.nn.functional.cross_entropy` means by it: the weighted mean over the items that are
not ignored, :math:`\sum_i w_{t_i} \ell_i / \sum_i w_{t_i}`. When ``num_items_in_batch`` is given
the result is the (weighted) sum divided by that number, which keeps gradient accumulation exact
when the number is the count of items in the whole accumulated batch. A batch in which every item
is ignored gives 0 with a zero gradient, never NaN.

Inputs of any floating dtype are computed in float32 (float64 stays float64), in log space:
:math:`\log p_t` comes from ``log_softmax`` / ``logsigmoid``, and :math:`\log(1-p_t)` from the
log-sum-exp of the other classes, so no probability is ever clamped with an epsilon and logits of
:math:`\pm 10^4` stay finite in value and gradient.

Notation below: :math:`p = \mathrm{softmax}(x)`, :math:`p_t` the probability of the target
class, :math:`s` the logistic sigmoid, :math:`[\cdot]` is 1 where true and 0 elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "Reduction",
    "cross_entropy",
    "focal_loss",
    "soft_truncation_loss",
    "hard_truncation_loss",
    "dice_loss",
    "CrossEntropyLoss",
    "FocalLoss",
    "SoftTruncationLoss",
    "HardTruncationLoss",
    "DiceLoss",
    "build_loss",
    "available_losses",
    "loss_registry",
]

Reduction = Literal["none", "mean", "sum"]
_REDUCTIONS = ("none", "mean", "sum")

# A per-item loss written in terms of log p_t and log(1 - p_t). ``log1m_p`` is None when the
# loss declared it does not need it (saves one pass over the logits).
ItemLoss = Callable[[Tensor, Tensor | None], Tensor]


# --------------------------------------------------------------------------- validation


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(_REDUCTIONS)}, got {reduction!r}")


def _check_range(name: str, value: float, low: float, high: float | None = None,
                 low_open: bool = False) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    bad_low = value <= low if low_open else value < low
    if bad_low or (high is not None and value > high):
        lo = "(" if low_open else "["
        hi = f"{high}]" if high is not None else "inf)"
        raise ValueError(f"{name} must be in {lo}{low}, {hi}, got {value}")


def _compute_dtype(logits: Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _check_weight(weight: Tensor | None, num_classes: int, logits: Tensor) -> Tensor | None:
    if weight is None:
        return None
    if not isinstance(weight, Tensor):
        weight = torch.as_tensor(weight)
    if weight.dim() != 1 or weight.numel() != num_classes:
        raise ValueError(
            f"weight has shape {tuple(weight.shape)}, expected ({num_classes},): one weight per "
            f"class (the last dimension of logits)"
        )
    return weight.to(device=logits.device, dtype=_compute_dtype(logits))


def _check_multiclass(logits: Tensor, target: Tensor, ignore_index: int) -> None:
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise ValueError(
            f"logits must be a floating-point tensor, got "
            f"{logits.dtype if isinstance(logits, Tensor) else type(logits).__name__}"
        )
    if logits.dim() < 1:
        raise ValueError("logits must have a class dimension (last), got a 0-d tensor")
    if not isinstance(target, Tensor) or target.is_floating_point() or target.is_complex():
        raise ValueError(
            f"target must be an integer tensor of class indices, got "
            f"{target.dtype if isinstance(target, Tensor) else type(target).__name__}"
            " (for 0/1 targets of the same shape as logits use binary=True)"
        )
    if tuple(target.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"target has shape {tuple(target.shape)}, expected {tuple(logits.shape[:-1])} "
            f"(logits {tuple(logits.shape)} without the class dimension)"
        )
    num_classes = logits.shape[-1]
    if target.numel() == 0:
        return
    lo, hi = torch.aminmax(target.masked_fill(target == ignore_index, 0))
    if int(lo) < 0 or int(hi) >= num_classes:
        bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
        value = int(target[bad].flatten()[0])
        raise ValueError(
            f"target holds {value}, expected a class index in [0, {num_classes}) or "
            f"ignore_index={ignore_index}"
        )


def _check_binary(logits: Tensor, target: Tensor, ignore_index: int) -> None:
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise ValueError("logits must be a floating-point tensor")
    if not isinstance(target, Tensor):
        raise ValueError(f"target must be a tensor, got {type(target).__name__}")
    if tuple(target.shape) != tuple(logits.shape):
        raise ValueError(
            f"target has shape {tuple(target.shape)}, expected {tuple(logits.shape)} "
            "(binary losses take a target of the same shape as logits)"
        )
    t = target.to(torch.float64)
    bad = (t != ignore_index) & ((t < 0) | (t > 1))
    if bool(bad.any()):
        value = float(t[bad].flatten()[0])
        raise ValueError(
            f"binary target holds {value}, expected a value in [0, 1] or ignore_index={ignore_index}"
        )


# --------------------------------------------------------------------------- core


def _lse_and_lse_others(x: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """``logsumexp(x)`` and ``logsumexp`` over the classes other than the target, in one pass of
    exponentials. Where the others' sum underflows against the row maximum (a margin of about 80
    or more in float32) those rows are recomputed exactly with the target masked out."""
    m = x.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.sub(x, m).exp_()
    total = e.sum(-1)
    others = e.scatter_(-1, idx, 0.0).sum(-1)
    m = m.squeeze(-1)
    lse = m + torch.log(total)
    lse_o = m + torch.log(others)
    tiny = others < torch.finfo(x.dtype).tiny * 2**24
    if x.shape[-1] > 1 and bool(tiny.any()):
        rows = tiny.nonzero(as_tuple=True)
        exact = torch.logsumexp(x[rows].scatter(-1, idx[rows], -math.inf), dim=-1)
        lse_o = lse_o.index_put(rows, exact)
    return lse, lse_o


class _TargetLogProbs(torch.autograd.Function):
    r"""``(log p_t, log(1 - p_t))`` from logits, with a hand-written backward.

    Forward: :math:`\log p_t = x_t - \mathrm{lse}(x)` and
    :math:`\log(1-p_t) = \mathrm{lse}_{j \ne t}(x) - \mathrm{lse}(x)`, both exact.
    Backward: :math:`\partial \log p_t / \partial x_j = [j=t] - p_j` and
    :math:`\partial \log(1-p_t) / \partial x_j = q_j - p_j` with
    :math:`q = \mathrm{softmax}` over the classes other than t (0 at t). Only item-sized
    tensors go through autograd afterwards, so every loss costs about what cross-entropy costs.
    """

    @staticmethod
    def forward(ctx, x: Tensor, target: Tensor, need_log1m: bool):
        idx = target.unsqueeze(-1)
        if need_log1m:
            lse, lse_o = _lse_and_lse_others(x, idx)
            log1m = lse_o - lse
        else:
            lse = torch.logsumexp(x, dim=-1)
            lse_o, log1m = None, None
        logp = x.gather(-1, idx).squeeze(-1) - lse
        if log1m is None:
            log1m = torch.zeros_like(logp)
        ctx.need_log1m = need_log1m
        ctx.save_for_backward(x, target, lse, lse_o if need_log1m else lse)
        return logp, log1m

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_logp: Tensor, g_log1m: Tensor):
        x, target, lse, lse_o = ctx.saved_tensors
        idx = target.unsqueeze(-1)
        logp = x.gather(-1, idx).squeeze(-1) - lse
        if not ctx.need_log1m or g_log1m is None:
            g_log1m = torch.zeros_like(g_logp)
        # For j != t: grad_j = p_j * (-(g1 + g2) + g2 / (1 - p_t)), since q_j = p_j / (1 - p_t).
        # g2 / (1 - p_t) is formed in log space so that neither factor overflows alone.
        log1m = lse_o - lse
        alone = torch.isneginf(lse_o) | (g_log1m == 0)
        g2_over = torch.where(alone, 0.0, torch.sign(g_log1m) *
                              torch.exp(torch.log(g_log1m.abs()) - torch.where(alone, 0.0, log1m)))
        coef = g2_over - g_logp - g_log1m
        grad = torch.sub(x, lse.unsqueeze(-1)).exp_().mul_(coef.unsqueeze(-1))
        # the target column: g1 (1 - p_t) - g2 p_t
        at_t = g_logp * torch.exp(log1m) - g_log1m * torch.exp(logp) if ctx.need_log1m else \
            -g_logp * torch.expm1(logp)
        grad.scatter_(-1, idx, at_t.unsqueeze(-1))
        return grad, None, None


def _reduce(item: Tensor, w: Tensor | None, valid: Tensor, reduction: str,
            num_items_in_batch: int | Tensor | None) -> Tensor:
    """Weight, zero the ignored items and reduce. ``item`` is the unweighted per-item loss."""
    if w is not None:
        item = item * w
    item = torch.where(valid, item, torch.zeros((), dtype=item.dtype, device=item.device))
    if num_items_in_batch is None and reduction == "none":
        return item
    return _reduce_total(item.sum(), w, valid, reduction, num_items_in_batch)


def _reduce_total(total: Tensor, w: Tensor | None, valid: Tensor, reduction: str,
                  num_items_in_batch: int | Tensor | None) -> Tensor:
    """The weighted sum over valid items, divided as ``reduction``/``num_items_in_batch`` say.

    ``w`` holds each item's weight (None = 1)."""
    if num_items_in_batch is not None:
        if isinstance(num_items_in_batch, Tensor):
            num_items_in_batch = num_items_in_batch.to(device=total.device, dtype=total.dtype)
        return total / num_items_in_batch
    if reduction == "sum":
        return total
    denom = (w * valid).sum() if w is not None else valid.sum().to(total.dtype)
    # An all-ignored batch: the sum is an exact 0 connected to the graph, so its gradient is 0.
    return total / denom.clamp_min(torch.finfo(total.dtype).tiny)


def _multiclass(logits: Tensor, target: Tensor, item_loss: ItemLoss | None, *,
                needs_log1m: bool, weight: Tensor | None, ignore_index: int, reduction: str,
                num_items_in_batch: int | Tensor | None,
                fused: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
    """``item_loss`` on (log p_t, log(1 - p_t)), or ``fused(x, target)`` giving the per-item loss
    directly; then weights, ignored items and the reduction."""
    _check_multiclass(logits, target, ignore_index)
    _check_reduction(reduction)
    w_all = _check_weight(weight, logits.shape[-1], logits)
    x = logits.to(_compute_dtype(logits))
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros((), dtype=target.dtype, device=target.device))
    safe = safe.long()
    if fused is not None:
        item = fused(x, safe)
    else:
        logp, log1m = _TargetLogProbs.apply(x, safe, needs_log1m)
        item = item_loss(logp, log1m if needs_log1m else None)
    w = w_all[safe] if w_all is not None else None
    return _reduce(item, w, valid, reduction, num_items_in_batch)


def _binary(logits: Tensor, target: Tensor, item_loss: ItemLoss, *, needs_log1m: bool,
            weight: Tensor | None, ignore_index: int, reduction: str,
            num_items_in_batch: int | Tensor | None, alpha: float | None = None) -> Tensor:
    _check_binary(logits, target, ignore_index)
    _check_reduction(reduction)
    w_all = _check_weight(weight, logits.shape[-1], logits) if logits.dim() else None
    x = logits.to(_compute_dtype(logits))
    valid = target != ignore_index
    y = torch.where(valid, target.to(x.dtype), torch.zeros((), dtype=x.dtype, device=x.device))
    log_s_pos = F.logsigmoid(x)   # log p when y = 1
    log_s_neg = F.logsigmoid(-x)  # log p when y = 0, and log(1 - p) when y = 1
    pos = item_loss(log_s_pos, log_s_neg if needs_log1m else None)
    neg = item_loss(log_s_neg, log_s_pos if needs_log1m else None)
    if alpha is not None:
        pos, neg = alpha * pos, (1.0 - alpha) * neg
    item = y * pos + (1.0 - y) * neg
    w = w_all.expand_as(item) if w_all is not None else None
    return _reduce(item, w, valid, reduction, num_items_in_batch)


def _modulator(log1m: Tensor, power: float) -> Tensor:
    r""":math:`(1-p_t)^{\gamma}` as :math:`\exp(\gamma \log(1-p_t))`: exact 1 at gamma = 0."""
    if power == 0:
        return torch.ones_like(log1m)
    return torch.exp(power * log1m)


# --------------------------------------------------------------------------- functional


def cross_entropy(logits: Tensor, target: Tensor, *, weight: Tensor | None = None,
                  ignore_index: int = -100, reduction: Reduction = "mean",
                  num_items_in_batch: int | Tensor | None = None, binary: bool = False) -> Tensor:
    r"""Cross-entropy, the baseline every other loss reduces to at its degenerate setting.

    .. math::
        \text{multiclass: } -w_t \log p_t \qquad
        \text{binary: } -y \log s(x) - (1-y) \log s(-x)

    Shape:
        logits ``(*, C)``, target ``(*)`` (multiclass) or ``(*, C)`` (``binary=True``).

    Raises:
        ValueError: on shapes, target values, weights or a reduction that do not fit.

    Example:
        >>> cross_entropy(torch.zeros(2, 3), torch.tensor([0, 2]))
        tensor(1.0986)
    """
    if binary:
        return _binary(logits, target, lambda logp, _: -logp, needs_log1m=False, weight=weight,
                       ignore_index=ignore_index, reduction=reduction,
                       num_items_in_batch=num_items_in_batch)
    return _multiclass_ce(logits, target, weight=weight, ignore_index=ignore_index,
                          reduction=reduction, num_items_in_batch=num_items_in_batch)


def _multiclass_ce(logits: Tensor, target: Tensor, *, weight: Tensor | None, ignore_index: int,
                   reduction: str, num_items_in_batch: int | Tensor | None) -> Tensor:
    """Multiclass cross-entropy through ``F.cross_entropy``'s fused kernel (exact: log-softmax),
    with seqlab's checks, dtype rule, and contract for all-ignored batches and
    ``num_items_in_batch``."""
    _check_multiclass(logits, target, ignore_index)
    _check_reduction(reduction)
    num_classes = logits.shape[-1]
    w = _check_weight(weight, num_classes, logits)
    x = logits.to(_compute_dtype(logits)).reshape(-1, num_classes)
    t = target.reshape(-1).long()
    if num_items_in_batch is None and reduction == "none":
        return F.cross_entropy(x, t, weight=w, ignore_index=ignore_index,
                               reduction="none").reshape(target.shape)
    total = F.cross_entropy(x, t, weight=w, ignore_index=ignore_index, reduction="sum")
    valid = t != ignore_index
    w_items = w[t.masked_fill(~valid, 0)] if w is not None else None
    return _reduce_total(total, w_items, valid, reduction, num_items_in_batch)


def focal_loss(logits: Tensor, target: Tensor, *, gamma: float = 2.0, alpha: float | None = None,
               weight: Tensor | None = None, ignore_index: int = -100,
               reduction: Reduction = "mean", num_items_in_batch: int | Tensor | None = None,
               binary: bool = False) -> Tensor:
    r"""Focal loss (Lin et al., 2017, "Focal Loss for Dense Object Detection").

    .. math::
        \text{multiclass: } \mathrm{FL} = -w_t (1-p_t)^{\gamma} \log p_t

        \text{binary: } -a\,y\,s(-x)^{\gamma} \log s(x) - (1-a)(1-y)\,s(x)^{\gamma} \log s(-x)

    ``gamma = 0`` is cross-entropy exactly. ``alpha`` (the balance ``a`` in [0, 1]) applies to the
    binary form only; for the multiclass form use per-class ``weight``. The modulating factor is
    :math:`\exp(\gamma \log(1-p_t))` with :math:`\log(1-p_t)` taken from the other classes'
    log-sum-exp, so it is exact and differentiable even where :math:`p_t` rounds to 1.

    Raises:
        ValueError: gamma < 0, alpha outside [0, 1], alpha with the multiclass form, or bad inputs.

    Example:
        >>> focal_loss(torch.zeros(2, 3), torch.tensor([0, 2]), gamma=0.0)
        tensor(1.0986)
    """
    _check_range("gamma", gamma, 0.0)
    if alpha is not None:
        _check_range("alpha", alpha, 0.0, 1.0)
        if not binary:
            raise ValueError("alpha applies to the binary focal loss (binary=True); for the "
                             "multiclass form pass per-class weight=... instead")

    def item(logp: Tensor, log1m: Tensor | None) -> Tensor:
        return -logp if log1m is None else -_modulator(log1m, gamma) * logp

    needs = gamma != 0
    if binary:
        return _binary(logits, target, item, needs_log1m=needs, weight=weight,
                       ignore_index=ignore_index, reduction=reduction,
                       num_items_in_batch=num_items_in_batch, alpha=alpha)
    return _multiclass(logits, target, item, needs_log1m=needs, weight=weight,
                       ignore_index=ignore_index, reduction=reduction,
                       num_items_in_batch=num_items_in_batch)


class _SoftmaxForm(torch.autograd.Function):
    r"""The per-item softmax form of :math:`L^{**}`, :math:`-f \log p_t` with
    :math:`f = \mathrm{softmax}(-Kx)_t` (classes with a ``-inf`` logit left out), in one function.

    Backward, with :math:`p = \mathrm{softmax}(x)` and :math:`r = \mathrm{softmax}(-Kx)`:
    :math:`\partial \ell / \partial x_j = f\,(p_j - K \log p_t\, r_j + [j=t](K \log p_t - 1))`.
    Only item-sized tensors are kept between forward and backward.
    """

    @staticmethod
    def _neg(x: Tensor, k: float) -> Tensor:
        y = x.mul(-k)
        return y.masked_fill_(torch.isneginf(x), -math.inf)

    @staticmethod
    def forward(ctx, x: Tensor, target: Tensor, k: float):
        idx = target.unsqueeze(-1)
        lse = torch.logsumexp(x, dim=-1)
        logp = x.gather(-1, idx).squeeze(-1) - lse
        y = _SoftmaxForm._neg(x, k)
        lse_y = torch.logsumexp(y, dim=-1)
        f = torch.exp(y.gather(-1, idx).squeeze(-1) - lse_y)
        ctx.k = k
        ctx.save_for_backward(x, target, lse, lse_y, logp, f)
        return -f * logp

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor):
        x, target, lse, lse_y, logp, f = ctx.saved_tensors
        k = ctx.k
        c = g * f
        k_logp = k * logp
        r = _SoftmaxForm._neg(x, k).sub_(lse_y.unsqueeze(-1)).exp_().mul_(k_logp.unsqueeze(-1))
        grad = torch.sub(x, lse.unsqueeze(-1)).exp_().sub_(r).mul_(c.unsqueeze(-1))
        grad.scatter_add_(-1, target.unsqueeze(-1), (c * (k_logp - 1.0)).unsqueeze(-1))
        return grad, None, None


def soft_truncation_loss(logits: Tensor, target: Tensor, *, k: float = 1.0,
                         form: Literal["margin", "softmax"] = "margin",
                         weight: Tensor | None = None, ignore_index: int = -100,
                         reduction: Reduction = "mean",
                         num_items_in_batch: int | Tensor | None = None,
                         binary: bool = False) -> Tensor:
    r"""Soft truncation loss :math:`L^{**}` (Su Jianlin, kexue.fm, 2017).

    Binary form, which equals the binary focal loss with gamma = 1 (alpha off) at K = 1:

    .. math:: L^{**} = -y\,s(-Kx) \log s(x) - (1-y)\,s(Kx) \log s(-x)

    The post writes the multiclass form as :math:`-\mathrm{softmax}(-Kx)_t \log p_t`
    (``form="softmax"``) and says that with K = 1 it is focal loss with gamma = 1. Read as the
    t-th entry of :math:`\mathrm{softmax}(-Kx)` that identity holds only for C = 2: for C > 2,
    :math:`\mathrm{softmax}(-x)_t \ne 1 - p_t`. The ``form="margin"`` (default) keeps the identity
    for every C by truncating on the margin of the target against all other classes:

    .. math::
        L^{**}_{\text{margin}} = -s\big(K(\mathrm{logsumexp}_{j \ne t} x_j - x_t)\big) \log p_t,
        \qquad s(\mathrm{logsumexp}_{j \ne t} x_j - x_t) = 1 - p_t

    Both forms coincide at C = 2. At K = 0 the softmax form is cross-entropy / C and the margin
    form cross-entropy / 2. With ``binary=True`` the binary form above is used (``form`` is moot:
    the two forms agree for two classes).

    Raises:
        ValueError: k < 0, an unknown form, or bad inputs.

    Example:
        >>> soft_truncation_loss(torch.zeros(2, 2), torch.tensor([0, 1]), k=1.0)
        tensor(0.3466)
    """
    _check_range("k", k, 0.0)
    if form not in ("margin", "softmax"):
        raise ValueError(f"form must be 'margin' or 'softmax', got {form!r}")

    def margin(logp: Tensor, log1m: Tensor | None) -> Tensor:
        assert log1m is not None
        return -torch.sigmoid(k * (log1m - logp)) * logp

    if binary:
        return _binary(logits, target, margin, needs_log1m=True, weight=weight,
                       ignore_index=ignore_index, reduction=reduction,
                       num_items_in_batch=num_items_in_batch)
    if form == "softmax":
        return _multiclass(logits, target, None, needs_log1m=False,
                           weight=weight, ignore_index=ignore_index, reduction=reduction,
                           num_items_in_batch=num_items_in_batch,
                           fused=lambda x, t: _SoftmaxForm.apply(x, t, float(k)))
    return _multiclass(logits, target, margin, needs_log1m=True, weight=weight,
                       ignore_index=ignore_index, reduction=reduction,
                       num_items_in_batch=num_items_in_batch)


def hard_truncation_loss(logits: Tensor, target: Tensor, *, m: float = 0.5,
                         weight: Tensor | None = None, ignore_index: int = -100,
                         reduction: Reduction = "mean",
                         num_items_in_batch: int | Tensor | None = None,
                         binary: bool = False) -> Tensor:
    r"""Hard truncation loss: no loss and no gradient from items already past the threshold m.

    .. math::
        \text{multiclass: } -[p_t < m] \log p_t \qquad
        \text{binary: } -y\,[s(x) < m] \log s(x) - (1-y)\,[s(x) > 1-m] \log s(-x)

    ``m = 1`` is cross-entropy (an item with :math:`p_t = 1` has zero cross-entropy anyway). The
    comparison is made in log space (:math:`\log p_t < \log m`). ``"mean"`` still divides by all
    non-ignored items, so truncated items count as zeros, as in the post.

    Raises:
        ValueError: m outside (0, 1], or bad inputs.

    Example:
        >>> hard_truncation_loss(torch.tensor([[4.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 0]), m=0.6)
        tensor(0.3466)
    """
    _check_range("m", m, 0.0, 1.0, low_open=True)
    log_m = math.log(m)

    def item(logp: Tensor, _: Tensor | None) -> Tensor:
        return torch.where(logp < log_m, -logp, torch.zeros((), dtype=logp.dtype,
                                                             device=logp.device))

    run = _binary if binary else _multiclass
    return run(logits, target, item, needs_log1m=False, weight=weight, ignore_index=ignore_index,
               reduction=reduction, num_items_in_batch=num_items_in_batch)


def dice_loss(logits: Tensor, target: Tensor, *, alpha: float = 1.0, smooth: float = 1.0,
              weight: Tensor | None = None, ignore_index: int = -100,
              reduction: Reduction = "mean", num_items_in_batch: int | Tensor | None = None,
              binary: bool = False) -> Tensor:
    r"""Self-adjusting dice loss (Li et al., ACL 2020, "Dice Loss for Data-imbalanced NLP Tasks").

    Per item, with :math:`q = (1-p_t)^{\alpha} p_t` and smoothing :math:`\gamma` (``smooth``):

    .. math:: \mathrm{DSC} = 1 - \frac{2q + \gamma}{q + 1 + \gamma}

    on :math:`p_t = \mathrm{softmax}(x)_t`, or on :math:`s(x)` / :math:`s(-x)` with
    ``binary=True``. The :math:`(1-p_t)^{\alpha}` factor pushes down easy items; with
    :math:`\alpha > 0` the loss is not monotone in :math:`p_t` (a confident wrong item and a
    confident right one both score :math:`1/(1+\gamma)`), which is the paper's design.

    Raises:
        ValueError: alpha < 0, smooth < 0, or bad inputs.

    Example:
        >>> dice_loss(torch.zeros(1, 2), torch.tensor([0]), alpha=0.0, smooth=1.0)
        tensor(0.2000)
    """
    _check_range("alpha", alpha, 0.0)
    _check_range("smooth", smooth, 0.0)

    def item(logp: Tensor, log1m: Tensor | None) -> Tensor:
        p = logp.exp()
        q = p if log1m is None else _modulator(log1m, alpha) * p
        return 1.0 - (2.0 * q + smooth) / (q + 1.0 + smooth)

    run = _binary if binary else _multiclass
    return run(logits, target, item, needs_log1m=alpha != 0, weight=weight,
               ignore_index=ignore_index, reduction=reduction,
               num_items_in_batch=num_items_in_batch)


# --------------------------------------------------------------------------- modules


class _Loss(nn.Module):
    """Shared keywords of every loss module; subclasses set ``fn`` and their own options."""

    fn: Callable[..., Tensor]

    def __init__(self, *, weight: Tensor | list[float] | None = None, ignore_index: int = -100,
                 reduction: Reduction = "mean", binary: bool = False, **options: float | str | None):
        super().__init__()
        _check_reduction(reduction)
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=torch.float32)
            if weight.dim() != 1:
                raise ValueError(f"weight must be a 1-d tensor of per-class weights, got shape "
                                 f"{tuple(weight.shape)}")
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.binary = binary
        self.options = options
        # Fail now, not at the first batch, on options out of range.
        probe_logits = torch.zeros(1, 2)
        probe_target = torch.zeros(1, 2) if binary else torch.zeros(1, dtype=torch.long)
        type(self).fn(probe_logits, probe_target, binary=binary, **options)

    def forward(self, logits: Tensor, target: Tensor,
                num_items_in_batch: int | Tensor | None = None) -> Tensor:
        return type(self).fn(logits, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, num_items_in_batch=num_items_in_batch,
                             binary=self.binary, **self.options)

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{opts}, reduction={self.reduction!r}, binary={self.binary}".lstrip(", ")


class CrossEntropyLoss(_Loss):
    """Module form of :func:`cross_entropy`."""

    fn = staticmethod(cross_entropy)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)


class FocalLoss(_Loss):
    """Module form of :func:`focal_loss`."""

    fn = staticmethod(focal_loss)

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, **kwargs):
        super().__init__(gamma=gamma, alpha=alpha, **kwargs)


class SoftTruncationLoss(_Loss):
    """Module form of :func:`soft_truncation_loss`."""

    fn = staticmethod(soft_truncation_loss)

    def __init__(self, k: float = 1.0, form: Literal["margin", "softmax"] = "margin", **kwargs):
        super().__init__(k=k, form=form, **kwargs)


class HardTruncationLoss(_Loss):
    """Module form of :func:`hard_truncation_loss`."""

    fn = staticmethod(hard_truncation_loss)

    def __init__(self, m: float = 0.5, **kwargs):
        super().__init__(m=m, **kwargs)


class DiceLoss(_Loss):
    """Module form of :func:`dice_loss`."""

    fn = staticmethod(dice_loss)

    def __init__(self, alpha: float = 1.0, smooth: float = 1.0, **kwargs):
        super().__init__(alpha=alpha, smooth=smooth, **kwargs)


# --------------------------------------------------------------------------- registry

loss_registry: dict[str, type[_Loss]] = {
    "ce": CrossEntropyLoss,
    "focal": FocalLoss,
    "soft_truncation": SoftTruncationLoss,
    "hard_truncation": HardTruncationLoss,
    "dice": DiceLoss,
}


def available_losses() -> list[str]:
    """Names accepted by :func:`build_loss`, sorted."""
    return sorted(loss_registry)


def loss_options(name: str) -> list[str]:
    """The keyword arguments :func:`build_loss` takes for ``name``."""
    import inspect

    cls = _lookup(name)
    own = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")]
    return own + ["weight", "ignore_index", "reduction", "binary"]


def _lookup(name: str) -> type[_Loss]:
    if name not in loss_registry:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(available_losses())}")
    return loss_registry[name]


def build_loss(name: str, **kwargs) -> _Loss:
    """Build a loss module by registry name.

    Raises:
        ValueError: an unknown name (the known ones are listed) or an unknown option.

    Example:
        >>> build_loss("focal", gamma=2.0)
        FocalLoss(gamma=2.0, alpha=None, reduction='mean', binary=False)
    """
    cls = _lookup(name)
    known = loss_options(name)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(f"loss {name!r} takes no option {', '.join(map(repr, unknown))}; "
                         f"its options are: {', '.join(known)}")
    return cls(**kwargs)
