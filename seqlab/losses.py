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
is ignored gives 0 with a zero gradient, never NaN, and so does ``num_items_in_batch=0``.

Inputs of any floating dtype are computed in float32 (float64 stays float64), in log space: for
the multiclass losses :math:`\log p_t` and :math:`\log(1-p_t)` both come from the sum over the
other classes (exact however close :math:`p_t` is to 0 or 1), for the binary ones from
``logsigmoid``; so no probability is ever clamped with an epsilon and logits of
:math:`\pm 10^4` stay finite in value and gradient.

The multiclass losses on float32 (or float16/bfloat16) CPU tensors run through a compiled kernel
(:mod:`seqlab.kernels`) that computes each row's loss and gradient in one pass; elsewhere, or
where it cannot be built, they run as the torch operations below. Both compute the same
formulas and the tests hold them to each other.

Notation below: :math:`p = \mathrm{softmax}(x)`, :math:`p_t` the probability of the target
class, :math:`s` the logistic sigmoid, :math:`[\cdot]` is 1 where true and 0 elsewhere.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seqlab import kernels

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

# The compiled kernel's loss kinds and reduction modes (seqlab/csrc/losses.cpp, enums Kind and
# Mode). A loss's spec is (kind, a, b), its two parameters as the kernel reads them.
_KINDS = {"ce": 0, "focal": 1, "soft_truncation_margin": 2, "hard_truncation": 3, "dice": 4,
          "soft_truncation_softmax": 5}
_MODES = {"mean": 0, "sum": 1, "none": 2}
_DIVIDE = 3  # sum / num_items_in_batch
_NO_WEIGHT = torch.empty(0)  # the kernel's "no per-class weight"
Spec = tuple[int, float, float]


# --------------------------------------------------------------------------- validation


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(_REDUCTIONS)}, got {reduction!r}")


def _check_num_items(n):
    """``num_items_in_batch``: None, a number >= 0 or a one-element tensor (its value is read
    where that costs no device synchronisation, on the CPU)."""
    if n is None:
        return None
    if isinstance(n, Tensor):
        if n.numel() != 1:
            raise ValueError(f"num_items_in_batch must be a number or a one-element tensor, got a "
                             f"tensor of shape {tuple(n.shape)}")
        if n.device.type != "cpu":
            return n
        n = n.item()
    if isinstance(n, bool) or not isinstance(n, (int, float)) or math.isnan(n) or n < 0:
        raise ValueError(f"num_items_in_batch must be a count >= 0, got {n!r}")
    return n


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


def _check_multiclass(logits: Tensor, target: Tensor) -> None:
    """Types and shapes; the target values are checked by :func:`_check_target_values`."""
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


def _check_target_values(target: Tensor, num_classes: int, ignore_index: int) -> None:
    """ValueError naming the first target outside [0, C) that is not ``ignore_index``."""
    if target.numel() == 0:
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        value = int(target[bad].flatten()[0])
        raise ValueError(
            f"target holds {value}, expected a class index in [0, {num_classes}) or "
            f"ignore_index={ignore_index}"
        )


@contextlib.contextmanager
def _target_errors(target: Tensor, num_classes: int, ignore_index: int):
    """Turn an out-of-range target into seqlab's ValueError.

    On the CPU, indexing and ``gather`` check every index themselves, so the values are only
    looked at when they raise (no extra pass and no synchronisation per call). On other
    devices an out-of-range index is a device-side assertion, so they are checked first."""
    if target.device.type != "cpu":
        _check_target_values(target, num_classes, ignore_index)
        yield
        return
    try:
        yield
    except (RuntimeError, IndexError):
        _check_target_values(target, num_classes, ignore_index)
        raise


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


def _softmax_parts(x: Tensor, idx: Tensor, others: bool):
    r"""What the multiclass losses need of :math:`\mathrm{softmax}(x)`, from one pass of
    exponentials over ``x`` ``(N, C)`` with target indices ``idx`` ``(N, 1)``.

    Returns ``e`` (:math:`\exp(x - \max x)`, with the target column set to 0 when ``others``),
    ``total`` (:math:`\sum_j e_j`, so :math:`p = e / \mathrm{total}`), ``rest`` (the sum over
    the other classes, so :math:`1 - p_t = \mathrm{rest} / \mathrm{total}` exactly),
    :math:`\log p_t`, :math:`\log(1 - p_t)`, and ``tiny``: the rows where ``rest`` underflows
    against the row maximum (a margin of about 80 or more in float32), whose
    :math:`\log(1 - p_t)` is recomputed exactly with the target masked out (None if no row).
    ``rest``, :math:`\log(1 - p_t)` and ``tiny`` are None unless ``others``.

    With ``others``, :math:`\log \mathrm{total}` is :math:`\mathrm{log1p}(\mathrm{rest} + e_t - 1)`:
    where the target is the row maximum (:math:`e_t = 1`) that is :math:`\mathrm{log1p}(\mathrm{rest})`,
    so :math:`\log p_t` keeps its relative precision as :math:`p_t \to 1`, where
    :math:`x_t - \mathrm{logsumexp}(x)` rounds to 0.
    """
    m = x.amax(dim=-1, keepdim=True).nan_to_num_(0.0, 0.0, 0.0)
    e = torch.sub(x, m).exp_()
    x_t = x.gather(-1, idx).sub_(m).squeeze(-1)  # x_t - max
    if not others:
        total = e.sum(-1)
        return e, total, None, x_t.sub_(total.log()), None, None
    e_t = e.gather(-1, idx).squeeze(-1)
    rest = e.scatter_(-1, idx, 0.0).sum(-1)
    total = rest + e_t
    log_total = torch.log1p(e_t.sub_(1.0).add_(rest))
    logp = x_t.sub_(log_total)
    log1m = rest.log().sub_(log_total)
    tiny, floor = None, torch.finfo(x.dtype).tiny * 2**24
    if x.shape[-1] > 1 and rest.numel() and float(rest.amin()) < floor:
        tiny = (rest < floor).nonzero(as_tuple=True)
        exact = torch.logsumexp(x[tiny].scatter(-1, idx[tiny], -math.inf), dim=-1)
        log1m = log1m.index_put(tiny, exact - torch.logsumexp(x[tiny], dim=-1))
    return e, total, rest, logp, log1m, tiny


# A kernel computes, for logits x (N, C), target indices (N, 1), a mask of ignored items (N,) and the
# scale of each item in the reduction (weight / denominator: a tensor (N,) or (), a number, or
# None for 1): the scaled per-item losses (N,), 0 where ignored, and, when asked, the gradient
# of their sum with respect to x, in one forward.
Kernel = Callable[[Tensor, Tensor, Tensor, "Tensor | float | None", bool],
                  tuple[Tensor, "Tensor | None"]]

# A per-item loss of (log p_t, log(1 - p_t)) with its two partial derivatives:
# (loss, d loss / d log p_t, d loss / d log(1 - p_t)); the third is None when the loss does
# not depend on log(1 - p_t), and log(1 - p_t) is then not computed (it arrives as None).
ItemGrad = Callable[[Tensor, "Tensor | None"], tuple[Tensor, Tensor, "Tensor | None"]]


def _scaled(parts: list[Tensor] | Tensor, ignored: Tensor, scale) -> Tensor:
    """The per-item tensors stacked, times ``scale``, and exactly 0 on ignored items (even where
    an ignored item's loss is not finite); in place, so one stack of them is alive at a time."""
    stacked = torch.stack(parts) if isinstance(parts, list) else parts
    if scale is not None:
        stacked.mul_(scale)
    return stacked.masked_fill_(ignored, 0.0)


def _item_kernel(item_grad: ItemGrad, needs_log1m: bool) -> Kernel:
    r"""A kernel for a loss of :math:`\log p_t` and :math:`\log(1-p_t)`.

    With :math:`c_1, c_2` the scaled partials, the gradient is
    :math:`c_1([j=t] - p_j) + c_2(q_j - p_j)` for :math:`j \ne t`, where :math:`q` is the softmax
    over the classes other than t (:math:`\partial \log(1-p_t) / \partial x_j`), and
    :math:`c_1 (1 - p_t) - c_2 p_t` at the target.
    """

    def kernel(x: Tensor, idx: Tensor, ignored: Tensor, scale, need_grad: bool):
        e, total, rest, logp, log1m, tiny = _softmax_parts(x, idx, needs_log1m)
        item, g1, g2 = item_grad(logp, log1m)
        parts = _scaled([item, g1] if g2 is None else [item, g1, g2], ignored, scale)
        del item, g1
        if not need_grad:
            return parts[0], None
        c1 = parts[1]
        if g2 is None:
            grad = e.mul_((c1 / total).neg_().unsqueeze(-1))
            at_t = torch.expm1(logp).mul_(c1).neg_()
        else:
            c2 = parts[2]
            grad = e.mul_((c2 / rest).sub_((c1 + c2).div_(total)).unsqueeze(-1))
            at_t = (rest / total).mul_(c1).sub_(torch.exp(logp).mul_(c2))
        grad.scatter_(-1, idx, at_t.unsqueeze(-1))
        if tiny is not None:
            # where the others underflow, q from the other classes' own softmax
            xr, ir, c1r, c2r = x[tiny], idx[tiny], c1[tiny], c2[tiny]
            q = torch.softmax(xr.scatter(-1, ir, -math.inf), -1).nan_to_num_(0.0)
            rows = q.mul_(c2r.unsqueeze(-1)).sub_(torch.softmax(xr, -1).mul_((c1r + c2r).unsqueeze(-1)))
            rows.scatter_(-1, ir, (c1r * log1m[tiny].exp() - c2r * logp[tiny].exp()).unsqueeze(-1))
            grad = grad.index_put_(tiny, rows)
        return parts[0], grad

    return kernel


class _FusedLoss(torch.autograd.Function):
    """A kernel's loss (summed, or per item) and, computed in the same forward, its gradient;
    backward only scales that gradient. Only the gradient (N x C) is kept between the two."""

    @staticmethod
    def forward(ctx, x: Tensor, kernel: Kernel, idx: Tensor, ignored: Tensor, scale,
                need_grad: bool, per_item: bool) -> Tensor:
        out, grad = kernel(x, idx, ignored, scale, need_grad)
        ctx.per_item = per_item
        if grad is not None:
            ctx.save_for_backward(grad)
        return out if per_item else out.sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor):
        (grad,) = ctx.saved_tensors
        return grad * (g.unsqueeze(-1) if ctx.per_item else g), None, None, None, None, None, None


def _reduce(item: Tensor, w: Tensor | None, valid: Tensor, reduction: str,
            num_items_in_batch: int | Tensor | None) -> Tensor:
    """Weight, zero the ignored items and reduce. ``item`` is the unweighted per-item loss."""
    if w is not None:
        item = item * w
    item = torch.where(valid, item, 0.0)
    if num_items_in_batch is None and reduction == "none":
        return item
    total = item.sum()
    if num_items_in_batch is not None:  # 0: every item ignored, so the sum is 0 too
        if isinstance(num_items_in_batch, Tensor):
            return total / num_items_in_batch.to(device=total.device, dtype=total.dtype) \
                .clamp_min(torch.finfo(total.dtype).tiny)
        return total / num_items_in_batch if num_items_in_batch else total * 0.0
    if reduction == "sum":
        return total
    denom = (w * valid).sum() if w is not None else valid.sum().to(total.dtype)
    # An all-ignored batch: the sum is an exact 0 connected to the graph, so its gradient is 0.
    return total / denom.clamp_min(torch.finfo(total.dtype).tiny)


def _item_scale(w: Tensor | None, ignored: Tensor, reduction: str,
                num_items_in_batch: int | Tensor | None, dtype: torch.dtype):
    """Each item's factor in the reduced loss (None = 1): its weight, divided by
    ``num_items_in_batch`` or, for ``"mean"``, by the weighted count of valid items (clamped
    away from 0, so an all-ignored batch gives 0, not NaN)."""
    if num_items_in_batch is not None:  # 0: every item ignored, and the result is 0
        if isinstance(num_items_in_batch, Tensor):
            n = num_items_in_batch.to(device=ignored.device, dtype=dtype).clamp_min(
                torch.finfo(dtype).tiny)
            return w / n if w is not None else n.reciprocal()
        factor = 1.0 / num_items_in_batch if num_items_in_batch else 0.0
        return w * factor if w is not None else factor
    if reduction != "mean":
        return w
    if w is None and ignored.device.type == "cpu":  # a count: no tensor arithmetic needed
        count = ignored.numel() - int(ignored.sum())
        return 1.0 / count if count else 0.0
    denom = (w.masked_fill(ignored, 0.0).sum() if w is not None else
             (ignored.numel() - ignored.sum()).to(dtype)).clamp_min(torch.finfo(dtype).tiny)
    return w / denom if w is not None else denom.reciprocal()


def _multiclass(logits: Tensor, target: Tensor, kernel: Kernel, spec: Spec, *,
                weight: Tensor | None, ignore_index: int, reduction: str,
                num_items_in_batch: int | Tensor | None) -> Tensor:
    """A multiclass loss: checks, dtype rule, weights, ignored items and the reduction, with the
    gradient computed in the forward, by the compiled kernel where it applies (``spec``) and
    otherwise by the torch ``kernel`` (:class:`_FusedLoss`)."""
    _check_multiclass(logits, target)
    _check_reduction(reduction)
    num_items_in_batch = _check_num_items(num_items_in_batch)
    num_classes = logits.shape[-1]
    w_all = _check_weight(weight, num_classes, logits)
    per_item = num_items_in_batch is None and reduction == "none"
    if (logits.device.type == "cpu" and logits.dtype != torch.float64 and num_classes > 0
            and (compiled := kernels.losses()) is not None):
        # each call below costs microseconds, which count at small sizes: skip the no-ops
        x = logits if logits.dtype == torch.float32 else logits.float()
        if x.dim() != 2:
            x = x.reshape(-1, num_classes)
        t = target if target.dim() == 1 and target.dtype == torch.int64 else \
            target.reshape(-1).long()
        mode, denominator = _MODES[reduction], 0.0
        if num_items_in_batch is not None:  # a number here (a CPU tensor was read)
            mode, denominator = _DIVIDE, float(num_items_in_batch)
        out = compiled.multiclass_loss(x, t, w_all if w_all is not None else _NO_WEIGHT, *spec,
                                       ignore_index, mode, denominator)
        return out.reshape(target.shape) if per_item else out
    x = logits.to(_compute_dtype(logits)).reshape(-1, num_classes)
    t = target.reshape(-1)
    ignored = t == ignore_index
    idx = t.masked_fill(ignored, 0).long().unsqueeze(-1)
    need_grad = torch.is_grad_enabled() and x.requires_grad
    with _target_errors(target, num_classes, ignore_index):
        w = w_all[idx.squeeze(-1)] if w_all is not None else None
        scale = _item_scale(w, ignored, reduction, num_items_in_batch, x.dtype)
        out = _FusedLoss.apply(x, kernel, idx, ignored, scale, need_grad, per_item)
    return out.reshape(target.shape) if per_item else out


def _binary(logits: Tensor, target: Tensor, item_loss: ItemLoss, *, needs_log1m: bool,
            weight: Tensor | None, ignore_index: int, reduction: str,
            num_items_in_batch: int | Tensor | None, alpha: float | None = None) -> Tensor:
    _check_binary(logits, target, ignore_index)
    _check_reduction(reduction)
    num_items_in_batch = _check_num_items(num_items_in_batch)
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
    # the shared kernel: 2 x N x C x 4 bytes of extra peak memory against F.cross_entropy's 3
    return _multiclass(logits, target, _item_kernel(_ce_grad, False), (_KINDS["ce"], 0.0, 0.0),
                       weight=weight,
                       ignore_index=ignore_index, reduction=reduction,
                       num_items_in_batch=num_items_in_batch)


def _ce_grad(logp: Tensor, _: Tensor | None):
    return -logp, torch.full_like(logp, -1.0), None


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

    needs = gamma != 0
    if binary:
        def item(logp: Tensor, log1m: Tensor | None) -> Tensor:
            return -logp if log1m is None else -_modulator(log1m, gamma) * logp

        return _binary(logits, target, item, needs_log1m=needs, weight=weight,
                       ignore_index=ignore_index, reduction=reduction,
                       num_items_in_batch=num_items_in_batch, alpha=alpha)

    def item_grad(logp: Tensor, log1m: Tensor | None):
        if log1m is None:  # gamma = 0: cross-entropy
            return _ce_grad(logp, None)
        mod = torch.exp(log1m * gamma)
        loss = -mod * logp
        return loss, mod.neg_(), loss * gamma

    return _multiclass(logits, target, _item_kernel(item_grad, needs),
                       (_KINDS["focal"], float(gamma), 0.0), weight=weight,
                       ignore_index=ignore_index, reduction=reduction,
                       num_items_in_batch=num_items_in_batch)


def _softmax_form_kernel(k: float) -> Kernel:
    r"""The softmax form of :math:`L^{**}`, :math:`-f \log p_t` with
    :math:`f = \mathrm{softmax}(-Kx)_t` (classes with a ``-inf`` logit left out).

    Gradient, with :math:`p = \mathrm{softmax}(x)`, :math:`r = \mathrm{softmax}(-Kx)` and
    :math:`c` the item's scale times f:
    :math:`c\,(p_j - K \log p_t\, r_j + [j=t](K \log p_t - 1))`.
    """

    def kernel(x: Tensor, idx: Tensor, ignored: Tensor, scale, need_grad: bool):
        # p and r are normalised in place, and per-item tensors dropped as soon as they are
        # used: two N x C tensors and a few per-item ones are alive at the peak
        e, total, _, logp, _, _ = _softmax_parts(x, idx, False)
        p = e.div_(total.unsqueeze(-1))
        del e, total
        # -Kx, with classes whose logit is -inf (+inf here, or NaN at K = 0) left out
        y = x.mul(-k).nan_to_num_(-math.inf, -math.inf, -math.inf) if k > 0 else \
            torch.zeros_like(x).masked_fill_(torch.isneginf(x), -math.inf)
        r = y.sub_(y.amax(dim=-1, keepdim=True).nan_to_num_(0.0, 0.0, 0.0)).exp_()
        r = r.div_(r.sum(-1, keepdim=True))
        f = r.gather(-1, idx).squeeze(-1)
        parts = torch.stack([f, f, f])  # -> (loss, f, K f log p_t), then scaled
        del f
        parts[0].mul_(logp).neg_()
        parts[2].mul_(logp).mul_(k)
        del logp
        parts = _scaled(parts, ignored, scale)
        if not need_grad:
            return parts[0], None
        c, ck = parts[1], parts[2]
        grad = p.mul_(c.unsqueeze(-1)).sub_(r.mul_(ck.unsqueeze(-1)))
        grad.scatter_add_(-1, idx, (ck - c).unsqueeze(-1))
        return parts[0], grad

    return kernel


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

    if binary:
        def margin(logp: Tensor, log1m: Tensor | None) -> Tensor:
            return -torch.sigmoid(k * (log1m - logp)) * logp

        return _binary(logits, target, margin, needs_log1m=True, weight=weight,
                       ignore_index=ignore_index, reduction=reduction,
                       num_items_in_batch=num_items_in_batch)

    def margin_grad(logp: Tensor, log1m: Tensor | None):
        z = (log1m - logp).mul_(k)
        f = torch.sigmoid(z)
        a = torch.sigmoid(z.neg_()).mul_(f).mul_(logp).mul_(k)  # K f (1 - f) log p_t
        return -f * logp, a - f, a.neg_()

    kernel = (_softmax_form_kernel(float(k)) if form == "softmax" else
              _item_kernel(margin_grad, True))
    spec = (_KINDS[f"soft_truncation_{form}"], float(k), 0.0)
    return _multiclass(logits, target, kernel, spec, weight=weight, ignore_index=ignore_index,
                       reduction=reduction, num_items_in_batch=num_items_in_batch)


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

    if binary:
        def item(logp: Tensor, _: Tensor | None) -> Tensor:
            return torch.where(logp < log_m, -logp, 0.0)

        return _binary(logits, target, item, needs_log1m=False, weight=weight,
                       ignore_index=ignore_index, reduction=reduction,
                       num_items_in_batch=num_items_in_batch)

    def item_grad(logp: Tensor, _: Tensor | None):
        g = (logp < log_m).to(logp.dtype).neg_()  # -[p_t < m]
        return g * logp, g, None

    return _multiclass(logits, target, _item_kernel(item_grad, False),
                       (_KINDS["hard_truncation"], log_m, 0.0), weight=weight,
                       ignore_index=ignore_index, reduction=reduction,
                       num_items_in_batch=num_items_in_batch)


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

    if binary:
        def item(logp: Tensor, log1m: Tensor | None) -> Tensor:
            p = logp.exp()
            q = p if log1m is None else _modulator(log1m, alpha) * p
            return 1.0 - (2.0 * q + smooth) / (q + 1.0 + smooth)

        return _binary(logits, target, item, needs_log1m=alpha != 0, weight=weight,
                       ignore_index=ignore_index, reduction=reduction,
                       num_items_in_batch=num_items_in_batch)

    def item_grad(logp: Tensor, log1m: Tensor | None):
        # loss = (1 - q) / (q + 1 + smooth), d loss / d q = -(2 + smooth) / (q + 1 + smooth)^2,
        # d q / d log p_t = q, d q / d log(1 - p_t) = alpha q
        q = torch.exp(logp if log1m is None else logp + alpha * log1m)
        den = q + (1.0 + smooth)
        g = q.mul(-(2.0 + smooth)).div_(den).div_(den)
        return (1.0 - q).div_(den), g, None if log1m is None else g * alpha

    return _multiclass(logits, target, _item_kernel(item_grad, alpha != 0),
                       (_KINDS["dice"], float(alpha), float(smooth)), weight=weight,
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
