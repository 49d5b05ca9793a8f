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

Every loss is ordinary autograd over a few tensor operations, so it runs on any device and
under ``torch.compile(fullgraph=True)``. Inputs of any floating dtype are computed in float32
(float64 stays float64), in log space. The multiclass losses work from the margin of the target
against the other classes, :math:`z = \mathrm{logsumexp}_{j \ne t} x_j - x_t`:

.. math:: \log p_t = -\mathrm{softplus}(z), \qquad \log(1 - p_t) = -\mathrm{softplus}(-z),

both exact however close :math:`p_t` is to 0 or 1, with no probability clamped by an epsilon;
logits of :math:`\pm 10^4` stay finite in value and gradient. Cross-entropy itself is
:func:`torch.nn.functional.cross_entropy`.

No loss reads a tensor's value on the host, so none makes a device wait: on the CPU an
out-of-range class index is caught by the indexing itself and reported as a ``ValueError``; on
other devices it is, as in :func:`torch.nn.functional.cross_entropy`, a device-side assertion.
Binary targets are not range-checked (as in
:func:`torch.nn.functional.binary_cross_entropy_with_logits`), nor are tensor values of
``num_items_in_batch``.

Notation below: :math:`p = \mathrm{softmax}(x)`, :math:`p_t` the probability of the target
class, :math:`s` the logistic sigmoid, :math:`[\cdot]` is 1 where true and 0 elsewhere.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .registry import Registry

__all__ = [
    "Reduction",
    "cross_entropy",
    "focal_loss",
    "soft_truncation_loss",
    "hard_truncation_loss",
    "dice_loss",
    "multilabel_ce",
    "log_p_and_log1m_p",
    "CrossEntropyLoss",
    "FocalLoss",
    "SoftTruncationLoss",
    "HardTruncationLoss",
    "DiceLoss",
    "MultilabelCELoss",
    "build_loss",
    "available_losses",
    "loss_registry",
    "register_loss",
]

Reduction = Literal["none", "mean", "sum"]
_REDUCTIONS = ("none", "mean", "sum")

# A per-item loss of (log p_t, log(1 - p_t)).
ItemLoss = Callable[[Tensor, Tensor], Tensor]

# Stands in for the target's logit when the other classes' log-sum-exp is taken: finite (so a
# row whose other classes are all -inf stays differentiable), and far below any real logit (so
# it adds exactly 0 to every other row's sum).
_TARGET_FILL = -1e30


# --------------------------------------------------------------------------- validation


def _eager() -> bool:
    """Whether to validate arguments: always, except while ``torch.compile`` traces (an option
    that arrives as a symbolic number cannot be inspected without a graph break; the module
    forms validate their options once, when built)."""
    return not torch.compiler.is_compiling()


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(_REDUCTIONS)}, got {reduction!r}")


def _check_num_items(n) -> None:
    """``num_items_in_batch``: None, a number >= 0, or a one-element tensor (whose value is not
    read: that would wait for the device)."""
    if n is None:
        return
    if isinstance(n, Tensor):
        if n.numel() != 1:
            raise ValueError(f"num_items_in_batch must be a number or a one-element tensor, got a "
                             f"tensor of shape {tuple(n.shape)}")
        return
    if isinstance(n, bool) or not isinstance(n, (int, float)) or math.isnan(n) or n < 0:
        raise ValueError(f"num_items_in_batch must be a count >= 0, got {n!r}")


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
    """Types and shapes (no values: see :func:`_target_errors`)."""
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


def _target_errors(logits, target: Tensor, ignore_index: int):
    """A context that reports an out-of-range class index as a ValueError naming it (nothing
    while ``torch.compile`` traces).

    Indexing checks every index itself (on the CPU it raises, on other devices it is a
    device-side assertion), so the values are only looked at once it has failed: no extra pass,
    and no wait for the device on the way that succeeds."""
    if torch.compiler.is_compiling():
        return contextlib.nullcontext()
    num_classes = logits.shape[-1] if isinstance(logits, Tensor) and logits.dim() else 0
    return _reraise_bad_target(target, num_classes, ignore_index)


@contextlib.contextmanager
def _reraise_bad_target(target: Tensor, num_classes: int, ignore_index: int):
    try:
        yield
    except (RuntimeError, IndexError):
        if target.device.type == "cpu":
            bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
            if bool(bad.any()):
                raise ValueError(
                    f"target holds {int(target[bad].flatten()[0])}, expected a class index in "
                    f"[0, {num_classes}) or ignore_index={ignore_index}") from None
        raise


def _check_binary(logits: Tensor, target: Tensor) -> None:
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise ValueError("logits must be a floating-point tensor")
    if not isinstance(target, Tensor):
        raise ValueError(f"target must be a tensor, got {type(target).__name__}")
    if tuple(target.shape) != tuple(logits.shape):
        raise ValueError(
            f"target has shape {tuple(target.shape)}, expected {tuple(logits.shape)} "
            "(binary losses take a target of the same shape as logits)"
        )


# --------------------------------------------------------------------------- core


def log_p_and_log1m_p(x: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    r""":math:`\log p_t` and :math:`\log(1 - p_t)` of logits ``x`` ``(N, C)`` at target indices
    ``idx`` ``(N,)``, from the margin :math:`z = \mathrm{logsumexp}_{j \ne t} x_j - x_t`:
    :math:`-\mathrm{softplus}(z)` and :math:`-\mathrm{softplus}(-z)`.

    Both keep their relative precision at either end (:math:`x_t - \mathrm{logsumexp}(x)` rounds
    to 0 as :math:`p_t \to 1`, and :math:`\log(1 - e^{\log p_t})` loses everything there).
    Classes with a ``-inf`` logit count as absent; a row with no other class has
    :math:`\log p_t = 0` and a very negative, finite :math:`\log(1 - p_t)`.
    """
    z = margin(x, idx)
    return -F.softplus(z), -F.softplus(-z)


def margin(x: Tensor, idx: Tensor, ignored: Tensor | None = None) -> Tensor:
    r""":math:`z = \mathrm{logsumexp}_{j \ne t} x_j - x_t` per row, 0 where ``ignored`` (so that
    no ignored row, however masked its logits, can put a NaN into a gradient)."""
    idx = idx.unsqueeze(-1)
    x_t = x.gather(-1, idx).squeeze(-1)
    z = torch.logsumexp(x.scatter(-1, idx, _TARGET_FILL), dim=-1) - x_t
    return z if ignored is None else z.masked_fill(ignored, 0.0)


def _per_item_count(total: Tensor, num_items_in_batch) -> Tensor:
    """``total / num_items_in_batch``; 0 (with a zero gradient) when the count is 0, where every
    item was ignored and the sum is 0 too. A tensor count is divided on its device."""
    if isinstance(num_items_in_batch, Tensor):
        n = num_items_in_batch.to(device=total.device, dtype=total.dtype)
        return total / n.clamp_min(torch.finfo(total.dtype).tiny)
    return total / num_items_in_batch if num_items_in_batch else total * 0.0


def _reduce(item: Tensor, w: Tensor | None, ignored: Tensor, reduction: str,
            num_items_in_batch: int | float | Tensor | None) -> Tensor:
    """Weight, zero the ignored items and reduce; ``item`` is the unweighted per-item loss.
    Every count stays a tensor, so nothing waits for the device."""
    if w is not None:
        item = item * w
    item = item.masked_fill(ignored, 0.0)
    if num_items_in_batch is not None:
        return _per_item_count(item.sum(), num_items_in_batch)
    if reduction == "none":
        return item
    total = item.sum()
    if reduction == "sum":
        return total
    denom = w.masked_fill(ignored, 0.0).sum() if w is not None else \
        (~ignored).sum().to(total.dtype)
    # an all-ignored batch: the sum is an exact 0 connected to the graph, so its gradient is 0
    return total / denom.clamp_min(torch.finfo(total.dtype).tiny)


def _multiclass_inputs(logits: Tensor, target: Tensor, weight, ignore_index: int,
                       reduction: str, num_items_in_batch):
    """Checks and the shared preparation: logits ``(N, C)`` in the compute dtype, target
    indices with ignored items at 0, the ignored mask, and each item's weight (or None)."""
    _check_multiclass(logits, target)
    if _eager():
        _check_reduction(reduction)
        _check_num_items(num_items_in_batch)
    num_classes = logits.shape[-1]
    w_all = _check_weight(weight, num_classes, logits)
    t = target.reshape(-1)
    ignored = t == ignore_index
    idx = t.masked_fill(ignored, 0).long()
    x = logits.to(_compute_dtype(logits)).reshape(-1, num_classes)
    w = w_all[idx] if w_all is not None else None
    return x, idx, ignored, w


def _multiclass(logits: Tensor, target: Tensor, item_loss: ItemLoss, *, weight, ignore_index: int,
                reduction: str, num_items_in_batch, factor=None) -> Tensor:
    """A multiclass loss given as a function of :math:`\\log p_t` and :math:`\\log(1 - p_t)`;
    ``factor(x, idx)``, when given, multiplies each item's loss (it sees the logits)."""
    with _target_errors(logits, target, ignore_index):
        x, idx, ignored, w = _multiclass_inputs(logits, target, weight, ignore_index, reduction,
                                                num_items_in_batch)
        z = margin(x, idx, ignored)
        item = item_loss(-F.softplus(z), -F.softplus(-z))
        if factor is not None:
            item = item * factor(x, idx)
    out = _reduce(item, w, ignored, reduction, num_items_in_batch)
    return out.reshape(target.shape) if out.dim() else out


def _binary(logits: Tensor, target: Tensor, item_loss: ItemLoss, *, weight, ignore_index: int,
            reduction: str, num_items_in_batch, alpha: float | None = None) -> Tensor:
    _check_binary(logits, target)
    if _eager():
        _check_reduction(reduction)
        _check_num_items(num_items_in_batch)
    w_all = _check_weight(weight, logits.shape[-1], logits) if logits.dim() else None
    x = logits.to(_compute_dtype(logits))
    ignored = target == ignore_index
    y = target.to(x.dtype).masked_fill(ignored, 0.0)
    log_s_pos = F.logsigmoid(x)   # log p when y = 1
    log_s_neg = F.logsigmoid(-x)  # log p when y = 0, and log(1 - p) when y = 1
    pos = item_loss(log_s_pos, log_s_neg)
    neg = item_loss(log_s_neg, log_s_pos)
    if alpha is not None:
        pos, neg = alpha * pos, (1.0 - alpha) * neg
    item = y * pos + (1.0 - y) * neg
    w = w_all.expand_as(item) if w_all is not None else None
    return _reduce(item, w, ignored, reduction, num_items_in_batch)


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

    The multiclass form is :func:`torch.nn.functional.cross_entropy` per item, reduced as every
    other loss here (an all-ignored batch gives 0, where ``F.cross_entropy``'s mean is NaN).

    Shape:
        logits ``(*, C)``, target ``(*)`` (multiclass) or ``(*, C)`` (``binary=True``).

    Raises:
        ValueError: on shapes, target values, weights or a reduction that do not fit.

    Example:
        >>> cross_entropy(torch.zeros(2, 3), torch.tensor([0, 2]))
        tensor(1.0986)
    """
    if binary:
        return _binary(logits, target, lambda logp, _: -logp, weight=weight,
                       ignore_index=ignore_index, reduction=reduction,
                       num_items_in_batch=num_items_in_batch)
    num_classes = logits.shape[-1] if isinstance(logits, Tensor) and logits.dim() else 0
    with _target_errors(logits, target, ignore_index):
        _check_multiclass(logits, target)
        if _eager():
            _check_reduction(reduction)
            _check_num_items(num_items_in_batch)
        w_all = _check_weight(weight, num_classes, logits)
        x = logits.to(_compute_dtype(logits)).reshape(-1, num_classes)
        t = target.reshape(-1)
        per_item = reduction == "none" and num_items_in_batch is None
        out = F.cross_entropy(x, t, weight=w_all, ignore_index=ignore_index,
                              reduction="none" if per_item else "sum")
        if per_item:
            return out.reshape(target.shape)
        if num_items_in_batch is not None:
            return _per_item_count(out, num_items_in_batch)
        if reduction == "sum":
            return out
        # the weighted count of the items that are not ignored (F.cross_entropy's own "mean"
        # is NaN when every item is ignored)
        valid = t != ignore_index
        count = (w_all[t.masked_fill(~valid, 0)] * valid).sum() if w_all is not None else \
            valid.sum().to(out.dtype)
        return out / count.clamp_min(torch.finfo(out.dtype).tiny)


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
    :math:`\exp(\gamma \log(1-p_t))` with :math:`\log(1-p_t)` from the margin (module
    docstring), so it is exact and differentiable even where :math:`p_t` rounds to 1.

    Raises:
        ValueError: gamma < 0, alpha outside [0, 1], alpha with the multiclass form, or bad inputs.

    Example:
        >>> focal_loss(torch.zeros(2, 3), torch.tensor([0, 2]), gamma=0.0)
        tensor(1.0986)
    """
    if _eager():
        _focal_options(gamma, alpha, binary)

    def item(logp: Tensor, log1m: Tensor) -> Tensor:
        return -_modulator(log1m, gamma) * logp

    if binary:
        return _binary(logits, target, item, weight=weight, ignore_index=ignore_index,
                       reduction=reduction, num_items_in_batch=num_items_in_batch, alpha=alpha)
    return _multiclass(logits, target, item, weight=weight, ignore_index=ignore_index,
                       reduction=reduction, num_items_in_batch=num_items_in_batch)


def _focal_options(gamma: float, alpha: float | None, binary: bool = False) -> None:
    _check_range("gamma", gamma, 0.0)
    if alpha is not None:
        _check_range("alpha", alpha, 0.0, 1.0)
        if not binary:
            raise ValueError("alpha applies to the binary focal loss (binary=True); for the "
                             "multiclass form pass per-class weight=... instead")


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

    Both forms coincide at C = 2. At K = 0 the softmax form is cross-entropy / C (C counting the
    classes whose logit is not ``-inf``) and the margin form cross-entropy / 2. With
    ``binary=True`` the binary form above is used (``form`` is moot: the two forms agree for two
    classes).

    Raises:
        ValueError: k < 0, an unknown form, or bad inputs.

    Example:
        >>> soft_truncation_loss(torch.zeros(2, 2), torch.tensor([0, 1]), k=1.0)
        tensor(0.3466)
    """
    if _eager():
        _soft_truncation_options(k, form)

    def margin_form(logp: Tensor, log1m: Tensor) -> Tensor:
        return -torch.sigmoid(k * (log1m - logp)) * logp

    if binary:
        return _binary(logits, target, margin_form, weight=weight, ignore_index=ignore_index,
                       reduction=reduction, num_items_in_batch=num_items_in_batch)
    if form == "margin":
        return _multiclass(logits, target, margin_form, weight=weight, ignore_index=ignore_index,
                           reduction=reduction, num_items_in_batch=num_items_in_batch)

    def softmax_of_minus_kx(x: Tensor, idx: Tensor) -> Tensor:
        # softmax(-Kx)_t over the classes present (a -inf logit is an absent class; a finite
        # stand-in keeps a row with no class present free of NaN)
        y = torch.where(torch.isneginf(x), _TARGET_FILL, x * -k)
        return (y.gather(-1, idx.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(y, dim=-1)).exp()

    return _multiclass(logits, target, lambda logp, _: -logp, factor=softmax_of_minus_kx,
                       weight=weight, ignore_index=ignore_index, reduction=reduction,
                       num_items_in_batch=num_items_in_batch)


def _soft_truncation_options(k: float, form: str, binary: bool = False) -> None:
    _check_range("k", k, 0.0)
    if form not in ("margin", "softmax"):
        raise ValueError(f"form must be 'margin' or 'softmax', got {form!r}")


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
    if _eager():
        _hard_truncation_options(m)
    log_m = math.log(m)

    def item(logp: Tensor, _: Tensor) -> Tensor:
        return torch.where(logp < log_m, -logp, 0.0)

    run = _binary if binary else _multiclass
    return run(logits, target, item, weight=weight, ignore_index=ignore_index,
               reduction=reduction, num_items_in_batch=num_items_in_batch)


def _hard_truncation_options(m: float, binary: bool = False) -> None:
    _check_range("m", m, 0.0, 1.0, low_open=True)


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
    if _eager():
        _dice_options(alpha, smooth)

    def item(logp: Tensor, log1m: Tensor) -> Tensor:
        q = torch.exp(logp + alpha * log1m) if alpha else logp.exp()
        return (1.0 - q) / (q + (1.0 + smooth))

    run = _binary if binary else _multiclass
    return run(logits, target, item, weight=weight, ignore_index=ignore_index,
               reduction=reduction, num_items_in_batch=num_items_in_batch)


def _dice_options(alpha: float, smooth: float, binary: bool = False) -> None:
    _check_range("alpha", alpha, 0.0)
    _check_range("smooth", smooth, 0.0)


def multilabel_ce(logits: Tensor, target: Tensor, *, ignore_index: int = -100,
                  reduction: Reduction = "mean", num_items_in_batch: int | Tensor | None = None,
                  weight: Tensor | None = None, binary: bool = True) -> Tensor:
    r"""Multilabel categorical cross-entropy (Su Jianlin, kexue.fm, 2020): softmax cross-entropy
    generalised to many positive classes among many negative ones, with the decision threshold
    fixed at 0. Each row of ``logits`` is one item (for a span head: one entity type of one
    window, its candidate spans flattened into the class dimension):

    .. math::
        \log\Big(1 + \sum_{i \in \Omega_{neg}} e^{s_i}\Big)
        + \log\Big(1 + \sum_{j \in \Omega_{pos}} e^{-s_j}\Big)

    Every positive is pushed above 0 and every negative below it, together, as softmax
    cross-entropy pushes one class above the others. Computed in float32 (float64 stays float64) with
    ``logsumexp``; classes that are ignored or of the other polarity enter the sums as the
    compute dtype's lowest value, so any input dtype stays finite, ``bfloat16`` and ``float16``
    included. A row with every class ignored contributes 0 and is not counted.

    Shape:
        logits ``(*, C)``, target ``(*, C)`` holding 1 (positive), 0 (negative) or
        ``ignore_index``. ``reduction="mean"`` averages over the rows.

    Raises:
        ValueError: on shapes, a weight, or a reduction that does not fit.

    Example:
        >>> multilabel_ce(torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([[1, 0, 0]]))
        tensor(1.2311)
    """
    if _eager():
        _check_binary(logits, target)
        _check_reduction(reduction)
        _check_num_items(num_items_in_batch)
        if weight is not None:
            raise ValueError("multilabel_ce takes no per-class weight")
    x = logits.to(_compute_dtype(logits))
    ignored = target == ignore_index
    positive = (target == 1) & ~ignored
    negative = ~positive & ~ignored
    low = torch.finfo(x.dtype).min
    zero = x.new_zeros(x.shape[:-1] + (1,))
    neg = torch.logsumexp(torch.cat([torch.where(negative, x, low), zero], -1), dim=-1)
    pos = torch.logsumexp(torch.cat([torch.where(positive, -x, low), zero], -1), dim=-1)
    return _reduce(neg + pos, None, ignored.all(-1), reduction, num_items_in_batch)


# --------------------------------------------------------------------------- modules


# The keywords every loss shares; a loss's own options are the other keyword-only parameters
# of its function, written (with their defaults) once, there.
_SHARED = ("weight", "ignore_index", "reduction", "num_items_in_batch", "binary")


def _own_parameters(cls) -> list[inspect.Parameter]:
    """A loss module's own options: the keyword-only parameters of its function (``fn``) but
    the shared ones, then any named in an ``__init__`` of its own (a subclass that changes a
    default) that the function does not take."""
    own = [p for p in inspect.signature(cls.fn).parameters.values()
           if p.kind is p.KEYWORD_ONLY and p.name not in _SHARED]
    init = next((k.__init__ for k in cls.__mro__ if "__init__" in vars(k)), None)
    if init is not None and init is not _Loss.__init__:
        names = {p.name for p in own}
        own += [p for name, p in inspect.signature(init).parameters.items()
                if name not in names and name != "self" and name not in _SHARED
                and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    return own


class _Loss(nn.Module):
    """Shared keywords of every loss module; subclasses set ``fn`` (whose keyword-only
    parameters, beyond the shared ones, are the module's options with their defaults) and
    ``check`` (which validates those options without running the loss)."""

    fn: Callable[..., Tensor]
    check: Callable[..., None] = staticmethod(lambda binary=False, **options: None)
    multiclass: bool = True    # takes class-index targets (the softmax and tagging heads)
    binary_form: bool = True   # takes same-shaped 0/1 targets (binary=True; the span head)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" not in vars(cls) and "fn" in vars(cls):  # help() shows the options
            shared = [p for name, p in inspect.signature(_Loss.__init__).parameters.items()
                      if name not in ("self", "options")]
            cls.__signature__ = inspect.Signature(
                [p.replace(kind=p.KEYWORD_ONLY) for p in _own_parameters(cls)] + shared)

    def __init__(self, *, weight: Tensor | list[float] | None = None, ignore_index: int = -100,
                 reduction: Reduction = "mean", binary: bool = False, **options: float | str | None):
        super().__init__()
        _check_reduction(reduction)
        own = {p.name: p.default for p in _own_parameters(type(self))}
        unknown = sorted(set(options) - set(own))
        if unknown:
            raise TypeError(f"{type(self).__name__} takes no option {', '.join(map(repr, unknown))}; "
                            f"its options are: {', '.join(own) or 'none'}")
        options = {k: options.get(k, v) for k, v in own.items()}
        type(self).check(binary=binary, **options)  # fail now, not at the first batch
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

    def forward(self, logits: Tensor, target: Tensor,
                num_items_in_batch: int | Tensor | None = None) -> Tensor:
        return type(self).fn(logits, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, num_items_in_batch=num_items_in_batch,
                             binary=self.binary, **self.options)

    def count_items(self, target: Tensor) -> Tensor:
        """How many items ``reduction="mean"`` divides by (unweighted): the entries of
        ``target`` that are not ``ignore_index``; with ``num_items_in_batch`` summed over the
        micro-batches of an accumulated batch, accumulation equals the full batch."""
        return (target != self.ignore_index).sum()

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{opts}, reduction={self.reduction!r}, binary={self.binary}".lstrip(", ")


class CrossEntropyLoss(_Loss):
    """Module form of :func:`cross_entropy`."""

    fn = staticmethod(cross_entropy)


class FocalLoss(_Loss):
    """Module form of :func:`focal_loss` (its options and defaults: the function's)."""

    fn = staticmethod(focal_loss)
    check = staticmethod(_focal_options)


class SoftTruncationLoss(_Loss):
    """Module form of :func:`soft_truncation_loss`."""

    fn = staticmethod(soft_truncation_loss)
    check = staticmethod(_soft_truncation_options)


class HardTruncationLoss(_Loss):
    """Module form of :func:`hard_truncation_loss`."""

    fn = staticmethod(hard_truncation_loss)
    check = staticmethod(_hard_truncation_options)


class DiceLoss(_Loss):
    """Module form of :func:`dice_loss`."""

    fn = staticmethod(dice_loss)
    check = staticmethod(_dice_options)


class MultilabelCELoss(_Loss):
    """Module form of :func:`multilabel_ce` (targets are always of the logits' shape)."""

    fn = staticmethod(multilabel_ce)
    multiclass = False

    def __init__(self, **kwargs):
        kwargs["binary"] = True
        super().__init__(**kwargs)
        if self.weight is not None:
            raise ValueError("multilabel_ce takes no per-class weight")

    def forward(self, logits: Tensor, target: Tensor,
                num_items_in_batch: int | Tensor | None = None) -> Tensor:
        return multilabel_ce(logits, target, ignore_index=self.ignore_index,
                             reduction=self.reduction, num_items_in_batch=num_items_in_batch)

    def count_items(self, target: Tensor) -> Tensor:
        """The rows (the items of this loss) with at least one class not ignored."""
        return (target != self.ignore_index).any(-1).sum()


# --------------------------------------------------------------------------- registry

def _check_loss(cls) -> None:
    """A loss's contract: a :class:`_Loss` with its forms declared (``multiclass``,
    ``binary_form``) and ``count_items``, options in its function's signature."""
    if not (isinstance(cls, type) and issubclass(cls, _Loss)):
        raise TypeError(f"a registered loss is a subclass of seqlab.losses._Loss, got {cls!r}")


loss_registry: Registry[type[_Loss]] = Registry("loss.name", None)


def register_loss(name: str):
    """Class decorator: ``@register_loss("my_loss")`` makes ``loss.name: my_loss`` work, its
    options (its ``__init__``'s keywords) checked at config time. A package outside seqlab
    declares the module that calls it in the ``seqlab.plugins`` entry-point group."""
    return loss_registry.register(name, check=_check_loss)


for _name, _cls in (("ce", CrossEntropyLoss), ("focal", FocalLoss),
                    ("soft_truncation", SoftTruncationLoss),
                    ("hard_truncation", HardTruncationLoss), ("dice", DiceLoss),
                    ("multilabel_ce", MultilabelCELoss)):
    register_loss(_name)(_cls)


def available_losses() -> list[str]:
    """Names accepted by :func:`build_loss`, sorted."""
    return sorted(loss_registry)


def loss_options(name: str) -> list[str]:
    """The keyword arguments :func:`build_loss` takes for ``name``."""
    return [p.name for p in _own_parameters(_lookup(name))] + ["weight", "ignore_index",
                                                                "reduction", "binary"]


def loss_option_types(name: str) -> dict[str, object]:
    """The options of loss ``name`` a config may set, with their types (from the signatures):
    numbers, ``X | None``, strings (``Literal``), and ``weight`` as a list of numbers."""
    import typing

    cls = _lookup(name)
    namespace = {**globals(), "Tensor": Tensor}
    hints: dict = {}
    for fn in (cls.fn, *(k.__init__ for k in reversed(cls.__mro__) if "__init__" in vars(k)
                         and issubclass(k, _Loss))):
        with contextlib.suppress(NameError, TypeError):  # an annotation it cannot resolve: float
            hints.update(typing.get_type_hints(fn, globalns=namespace))
    out = {}
    for p in _own_parameters(cls):
        tp = hints.get(p.name, float)
        out[p.name] = str if typing.get_origin(tp) is Literal else tp
    out["weight"] = list
    return out


def _lookup(name: str) -> type[_Loss]:
    if name not in loss_registry:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(available_losses())}")
    return loss_registry[name]


def check_loss_options(name: str, *, binary: bool = False, **options) -> None:
    """Check loss ``name``'s options (the rest at their defaults) as building it would, without
    building it.

    Raises:
        ValueError: an option out of its range (the loss's own ``check``).
    """
    cls = _lookup(name)
    own = {p.name: p.default for p in _own_parameters(cls)}
    cls.check(binary=binary, **{k: options.get(k, v) for k, v in own.items()})


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
