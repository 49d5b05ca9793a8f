"""seqlab.losses against torch.nn.functional and against independent formulas."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from seqlab.losses import (
    available_losses,
    loss_registry,
    build_loss,
    cross_entropy,
    dice_loss,
    focal_loss,
    hard_truncation_loss,
    soft_truncation_loss,
)

REDUCTIONS = ["none", "mean", "sum"]
# the losses over class indices (multilabel_ce takes same-shaped 0/1 targets: tested below)
MULTICLASS = [n for n in available_losses() if loss_registry[n].multiclass]


def _data(n=40, c=5, seed=0, dtype=torch.float64, ignore=True):
    g = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(n, c, generator=g, dtype=dtype)).requires_grad_()
    t = torch.randint(0, c, (n,), generator=g)
    if ignore:
        t[::7] = -100
    w = torch.rand(c, generator=g, dtype=dtype) + 0.5
    return x, t, w


def _value_and_grad(fn, x):
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    out.sum().backward()
    return out.detach(), x.grad


def _assert_same(fn_a, fn_b, x, factor=1.0):
    va, ga = _value_and_grad(fn_a, x)
    vb, gb = _value_and_grad(fn_b, x)
    torch.testing.assert_close(va, factor * vb)
    torch.testing.assert_close(ga, factor * gb)


# --------------------------------------------------------------------------- degenerate settings


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("use_weight", [False, True])
def test_degenerate_settings_equal_cross_entropy(reduction, use_weight):
    x, t, w = _data()
    w = w if use_weight else None
    ce = lambda z: F.cross_entropy(z, t, weight=w, reduction=reduction)
    _assert_same(lambda z: cross_entropy(z, t, weight=w, reduction=reduction), ce, x)
    _assert_same(lambda z: focal_loss(z, t, gamma=0.0, weight=w, reduction=reduction), ce, x)
    _assert_same(lambda z: hard_truncation_loss(z, t, m=1.0, weight=w, reduction=reduction), ce, x)
    c = x.shape[-1]
    _assert_same(lambda z: soft_truncation_loss(z, t, k=0.0, form="softmax", weight=w,
                                                reduction=reduction), ce, x, factor=1 / c)
    _assert_same(lambda z: soft_truncation_loss(z, t, k=0.0, form="margin", weight=w,
                                                reduction=reduction), ce, x, factor=0.5)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_degenerate_settings(reduction):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (30, 4), generator=g).double()
    w = torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    # "mean" is the weighted mean, as in F.cross_entropy (BCE's own "mean" ignores the weights'
    # total), so the reference for it is the weighted sum over the total weight.
    if reduction == "mean":
        bce = lambda z: F.binary_cross_entropy_with_logits(z, y, weight=w, reduction="sum") \
            / w.expand_as(y).sum()
    else:
        bce = lambda z: F.binary_cross_entropy_with_logits(z, y, weight=w, reduction=reduction)
    _assert_same(lambda z: cross_entropy(z, y, weight=w, reduction=reduction, binary=True), bce, x)
    _assert_same(lambda z: focal_loss(z, y, gamma=0.0, weight=w, reduction=reduction,
                                      binary=True), bce, x)
    _assert_same(lambda z: soft_truncation_loss(z, y, k=0.0, weight=w, reduction=reduction,
                                                binary=True), bce, x, factor=0.5)


def test_binary_focal_matches_torchvision_formula():
    # torchvision.ops.sigmoid_focal_loss, written out independently (probabilities, not logs)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(50, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (50, 3), generator=g).double()
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    ref = (0.25 * y + 0.75 * (1 - y)) * ce * (1 - p_t) ** 2
    got = focal_loss(x, y, gamma=2.0, alpha=0.25, binary=True, reduction="none")
    torch.testing.assert_close(got, ref)


# --------------------------------------------------------------------------- identities of the post


def test_binary_soft_truncation_k1_is_focal_gamma1():
    x = torch.randn(64, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (64, 3)).double()
    _assert_same(lambda z: soft_truncation_loss(z, y, k=1.0, binary=True, reduction="none"),
                 lambda z: focal_loss(z, y, gamma=1.0, binary=True, reduction="none"), x)


def test_binary_soft_truncation_matches_written_formula():
    x = torch.randn(64, dtype=torch.float64)
    y = torch.randint(0, 2, (64,)).double()
    k = 2.5
    s = torch.sigmoid
    ref = -y * s(-k * x) * torch.log(s(x)) - (1 - y) * s(k * x) * torch.log(s(-x))
    torch.testing.assert_close(soft_truncation_loss(x, y, k=k, binary=True, reduction="none"), ref)


@pytest.mark.parametrize("k", [0.3, 1.0, 4.0])
def test_softmax_form_equals_margin_form_for_two_classes(k):
    x, t, _ = _data(c=2)
    _assert_same(lambda z: soft_truncation_loss(z, t, k=k, form="softmax", reduction="none"),
                 lambda z: soft_truncation_loss(z, t, k=k, form="margin", reduction="none"), x)


def test_softmax_form_differs_from_focal_for_more_classes():
    x, t, _ = _data(c=5, ignore=False)
    a = soft_truncation_loss(x, t, k=1.0, form="softmax")
    b = focal_loss(x, t, gamma=1.0)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("c", [2, 3, 9])
def test_margin_form_k1_is_focal_gamma1(c):
    x, t, _ = _data(c=c)
    _assert_same(lambda z: soft_truncation_loss(z, t, k=1.0, form="margin", reduction="none"),
                 lambda z: focal_loss(z, t, gamma=1.0, reduction="none"), x)


def test_softmax_form_matches_written_formula():
    x, t, _ = _data(c=6, ignore=False)
    k = 1.5
    ref = -torch.softmax(-k * x, -1).gather(-1, t[:, None])[:, 0] * \
        torch.log_softmax(x, -1).gather(-1, t[:, None])[:, 0]
    torch.testing.assert_close(soft_truncation_loss(x, t, k=k, form="softmax", reduction="none"), ref)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
def test_focal_over_ce_is_closed_form_ratio(gamma):
    x, t, _ = _data(ignore=False)
    p_t = torch.softmax(x, -1).gather(-1, t[:, None])[:, 0]
    ratio = focal_loss(x, t, gamma=gamma, reduction="none") / F.cross_entropy(x, t, reduction="none")
    torch.testing.assert_close(ratio, (1 - p_t) ** gamma)


def test_hard_truncation_drops_confident_items():
    x = torch.tensor([[4.0, 0.0], [0.0, 0.0], [0.0, 3.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 0, 0])
    loss = hard_truncation_loss(x, t, m=0.6, reduction="none")
    ce = F.cross_entropy(x, t, reduction="none")
    assert loss[0] == 0 and torch.isclose(loss[1], ce[1]) and torch.isclose(loss[2], ce[2])
    loss.sum().backward()
    assert torch.all(x.grad[0] == 0) and torch.any(x.grad[1] != 0)


def test_binary_hard_truncation_formula():
    x = torch.tensor([2.0, -2.0, 0.1, -0.1], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    m = 0.8
    s = torch.sigmoid
    ref = -y * (s(x) < m) * torch.log(s(x)) - (1 - y) * (s(x) > 1 - m) * torch.log(s(-x))
    torch.testing.assert_close(hard_truncation_loss(x, y, m=m, binary=True, reduction="none"), ref)
    assert ref[0] == 0 and ref[1] == 0 and ref[2] > 0 and ref[3] > 0


def test_dice_matches_paper_formula():
    x, t, _ = _data(ignore=False)
    p = torch.softmax(x, -1).gather(-1, t[:, None])[:, 0]
    a, g = 0.7, 1.0
    q = (1 - p) ** a * p
    ref = 1 - (2 * q + g) / (q + 1 + g)
    torch.testing.assert_close(dice_loss(x, t, alpha=a, smooth=g, reduction="none"), ref)


# --------------------------------------------------------------------------- reductions and contract


@pytest.mark.parametrize("name", MULTICLASS)
def test_all_ignored_batch_is_zero_with_zero_grad(name):
    x = torch.randn(6, 4, requires_grad=True)
    t = torch.full((6,), -100)
    loss = build_loss(name)(x, t)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(x.grad == 0)


@pytest.mark.parametrize("name", MULTICLASS)
def test_ignored_positions_get_exactly_zero_gradient(name):
    x, t, w = _data(dtype=torch.float32)
    x = x.detach().requires_grad_()
    build_loss(name, weight=w.float())(x, t).backward()
    assert torch.all(x.grad[t == -100] == 0)
    assert torch.any(x.grad[t != -100] != 0)


@pytest.mark.parametrize("name", MULTICLASS)
def test_gradient_accumulation_with_num_items_equals_full_batch(name):
    x, t, _ = _data(n=64)
    loss_fn = build_loss(name)
    full = x.detach().clone().requires_grad_()
    loss_fn(full, t).backward()
    acc = x.detach().clone().requires_grad_()
    n_items = int((t != -100).sum())
    for chunk in range(4):
        sl = slice(16 * chunk, 16 * (chunk + 1))
        loss_fn(acc[sl], t[sl], num_items_in_batch=n_items).backward()
    torch.testing.assert_close(acc.grad, full.grad)


def test_num_items_in_batch_as_tensor():
    x, t, _ = _data()
    n = (t != -100).sum()
    torch.testing.assert_close(focal_loss(x, t, num_items_in_batch=n),
                               focal_loss(x, t, reduction="sum") / n)


GRADCHECK_OPTIONS = [("focal", {"gamma": 0.0}), ("focal", {"gamma": 0.5}),
                     ("soft_truncation", {"k": 2.0}), ("soft_truncation", {"form": "softmax"}),
                     ("hard_truncation", {"m": 0.3}), ("dice", {"alpha": 0.0})]


@pytest.mark.parametrize("reduction", REDUCTIONS + ["num_items"])
@pytest.mark.parametrize("name", MULTICLASS)
def test_gradcheck_float64(name, reduction):
    x, t, w = _data(n=6, c=4)
    t[1] = -100
    if reduction == "num_items":
        loss_fn = build_loss(name, weight=w)
        assert torch.autograd.gradcheck(lambda z: loss_fn(z, t, num_items_in_batch=7), (x,))
    else:
        loss_fn = build_loss(name, weight=w, reduction=reduction)
        assert torch.autograd.gradcheck(lambda z: loss_fn(z, t), (x,))


@pytest.mark.parametrize("name, options", GRADCHECK_OPTIONS)
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_gradcheck_float64_other_settings(name, options, reduction):
    x, t, w = _data(n=6, c=4, seed=3)
    loss_fn = build_loss(name, weight=w, reduction=reduction, **options)
    assert torch.autograd.gradcheck(lambda z: loss_fn(z, t), (x,))


@pytest.mark.parametrize("name", MULTICLASS)
def test_value_without_gradient_equals_value_with_it(name):
    x, t, w = _data(dtype=torch.float32)
    loss_fn = build_loss(name, weight=w.float())
    with torch.no_grad():
        quiet = loss_fn(x, t)
    torch.testing.assert_close(quiet, loss_fn(x, t).detach())
    torch.testing.assert_close(loss_fn(x.detach(), t), quiet)


@pytest.mark.parametrize("name", MULTICLASS)
def test_ignored_items_with_infinite_logits_contribute_nothing(name):
    # a padded position whose logits are masked with -inf is ignored, not a NaN
    x, t, _ = _data(n=8, c=4, dtype=torch.float32, ignore=False)
    x = x.detach()
    x[2, :3] = -math.inf
    x[5, 0] = -math.inf
    t[2] = t[5] = -100
    x.requires_grad_()
    loss = build_loss(name)(x, t)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.all(x.grad[[2, 5]] == 0) and torch.all(torch.isfinite(x.grad))


@pytest.mark.parametrize("name", MULTICLASS)
def test_gradcheck_binary_float64(name):
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (5, 3)).double()
    y[0, 0] = -100
    loss_fn = build_loss(name, binary=True)
    assert torch.autograd.gradcheck(lambda z: loss_fn(z, y), (x,))


def test_gradcheck_soft_truncation_softmax_form():
    x, t, _ = _data(n=6, c=4)
    assert torch.autograd.gradcheck(
        lambda z: soft_truncation_loss(z, t, k=1.3, form="softmax"), (x,))


@pytest.mark.parametrize("name", MULTICLASS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_extreme_logits_and_half_precision_stay_finite(name, dtype):
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [0.0, 0.0, 0.0]])
    x = x.to(dtype).requires_grad_()
    t = torch.tensor([0, 0, 2])
    options = {"gamma": 0.5} if name == "focal" else {}
    loss = build_loss(name, **options)(x, t)
    loss.backward()
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss) and torch.all(torch.isfinite(x.grad))
    yb = torch.tensor([[1.0, 0.0, 1.0]] * 3)
    xb = x.detach().clone().requires_grad_()
    loss = build_loss(name, binary=True)(xb, yb)
    loss.backward()
    assert torch.isfinite(loss) and torch.all(torch.isfinite(xb.grad))


def test_nd_inputs_class_dimension_last():
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    t = torch.randint(0, 5, (2, 7))
    t[0, :3] = -100
    torch.testing.assert_close(focal_loss(x, t, gamma=0.0),
                               F.cross_entropy(x.reshape(-1, 5), t.reshape(-1)))


# --------------------------------------------------------------------------- properties

finite = st.floats(min_value=-30, max_value=30, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(logits=st.lists(st.lists(finite, min_size=4, max_size=4), min_size=1, max_size=6),
       data=st.data())
def test_properties(logits, data):
    x = torch.tensor(logits, dtype=torch.float64)
    t = torch.tensor(data.draw(st.lists(st.integers(0, 3), min_size=len(logits),
                                        max_size=len(logits))))
    gamma = data.draw(st.floats(0, 5))
    ce = cross_entropy(x, t, reduction="none")
    for name in MULTICLASS:
        assert torch.all(build_loss(name, reduction="none")(x, t) >= 0)
    assert torch.all(focal_loss(x, t, gamma=gamma, reduction="none") <= ce + 1e-12)
    assert torch.all(soft_truncation_loss(x, t, reduction="none") <= ce + 1e-12)


@settings(max_examples=40, deadline=None)
@given(margin=st.floats(0.5, 20), c=st.integers(2, 9), target=st.integers(0, 8))
def test_confident_correct_scores_lower_than_confident_wrong(margin, c, target):
    target = target % c
    right = torch.zeros(1, c, dtype=torch.float64)
    right[0, target] = margin
    wrong = torch.zeros(1, c, dtype=torch.float64)
    wrong[0, (target + 1) % c] = margin
    t = torch.tensor([target])
    for name, opts in [("ce", {}), ("focal", {"gamma": 2.0}), ("soft_truncation", {}),
                       ("soft_truncation", {"form": "softmax"}), ("hard_truncation", {"m": 0.9}),
                       ("dice", {"alpha": 0.0})]:
        fn = build_loss(name, **opts)
        assert fn(right, t) < fn(wrong, t), name


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("call, match", [
    (lambda: focal_loss(torch.randn(4, 3), torch.zeros(5, dtype=torch.long)),
     r"target has shape \(5,\), expected \(4,\)"),
    (lambda: focal_loss(torch.randn(4, 3), torch.tensor([0, 1, 3, -100])),
     r"target holds 3, expected a class index in \[0, 3\)"),
    (lambda: focal_loss(torch.randn(4, 3), torch.tensor([0, 1, -1, 2])), r"target holds -1"),
    (lambda: focal_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), gamma=-1.0),
     r"gamma must be in \[0"),
    (lambda: soft_truncation_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), k=-0.5),
     r"k must be in \[0"),
    (lambda: hard_truncation_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), m=0.0),
     r"m must be in \(0"),
    (lambda: hard_truncation_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), m=1.5),
     r"m must be in \(0.0, 1.0\], got 1.5"),
    (lambda: focal_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long),
                        weight=torch.ones(4)), r"weight has shape \(4,\), expected \(3,\)"),
    (lambda: focal_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), reduction="avg"),
     r"reduction must be one of \['none', 'mean', 'sum'\], got 'avg'"),
    (lambda: build_loss("focall"), r"unknown loss 'focall'; known losses: ce, dice, focal"),
    (lambda: build_loss("focal", gama=2.0), r"takes no option 'gama'"),
    (lambda: focal_loss(torch.randn(4, 3), torch.rand(4, 3)), r"integer tensor"),
    (lambda: focal_loss(torch.randn(4, 3), torch.zeros(4, 3), binary=True, alpha=1.5),
     r"alpha must be in \[0"),
    (lambda: cross_entropy(torch.randn(4, 3), torch.zeros(4, 2), binary=True),
     r"target has shape \(4, 2\), expected \(4, 3\)"),
    (lambda: soft_truncation_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long),
                                  form="cosine"), r"form must be 'margin' or 'softmax'"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_module_validates_options_eagerly():
    with pytest.raises(ValueError, match="gamma"):
        build_loss("focal", gamma=-2.0)


def test_docstring_examples():
    assert math.isclose(focal_loss(torch.zeros(2, 3), torch.tensor([0, 2]), gamma=0.0).item(),
                        math.log(3), rel_tol=1e-6)


@pytest.mark.parametrize("name, options", [(n, {}) for n in MULTICLASS] +
                         [("soft_truncation", {"form": "softmax"})])
def test_classes_masked_with_minus_inf_are_no_classes(name, options):
    # QA masks non-context positions with -inf: the loss must equal the loss over the rest
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    x[:, 3:] = -math.inf
    x.requires_grad_()
    t = torch.tensor([0, 1, 2, 0])
    loss_fn = build_loss(name, **options)
    loss = loss_fn(x, t)
    loss.backward()
    assert torch.isfinite(loss) and torch.all(x.grad[:, 3:] == 0)
    sub = x.detach()[:, :3].clone().requires_grad_()
    ref = loss_fn(sub, t)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(x.grad[:, :3], sub.grad)


def test_log_one_minus_p_is_exact_for_large_margins_in_float32():
    # log(1 - p_t) drives focal, soft truncation and dice; check it against float64 where the
    # one-pass sum underflows (margin >= ~80) and where it does not
    from seqlab.losses import log_p_and_log1m_p

    g = torch.Generator().manual_seed(7)
    x64 = torch.randn(200, 9, generator=g, dtype=torch.float64)
    t = torch.randint(0, 9, (200,), generator=g)
    margins = torch.linspace(0, 300, 200, dtype=torch.float64)
    x64[torch.arange(200), t] += margins
    logp, log1m = log_p_and_log1m_p(x64.float(), t)
    # references without cancellation: with d = logsumexp over the others - x_t,
    # log p_t = -log(1 + e^d) and log(1 - p_t) = d - log(1 + e^d)
    d = (torch.logsumexp(x64.scatter(-1, t.unsqueeze(-1), -math.inf), -1)
         - x64.gather(-1, t.unsqueeze(-1)).squeeze(-1))
    ref_p, ref_o = -F.softplus(d), d - F.softplus(d)
    torch.testing.assert_close(log1m.double(), ref_o, atol=1e-4, rtol=1e-6)
    # log p_t keeps its relative precision as p_t -> 1 (x_t - logsumexp(x) rounds to 0 there)
    normal = ref_p.abs() > torch.finfo(torch.float32).tiny
    assert normal.sum() > 50
    torch.testing.assert_close(logp.double()[normal], ref_p[normal], atol=0, rtol=1e-5)
    # gradients in float32 follow float64's wherever they are above float32's smallest normal
    # numbers (past a margin of about 80 they are all below it, and only need to be finite)
    for fn in (lambda z: focal_loss(z, t, gamma=0.05, reduction="sum"),
               lambda z: soft_truncation_loss(z, t, k=0.2, reduction="sum"),
               lambda z: dice_loss(z, t, alpha=0.1, reduction="sum")):
        _, g64 = _value_and_grad(fn, x64)
        _, g32 = _value_and_grad(fn, x64.float())
        big = g64.abs() > 1e-36
        assert big[margins < 50].all()
        torch.testing.assert_close(g32.double()[big], g64[big], rtol=1e-4, atol=0)
    # the focal loss stays finite with a finite, nonzero gradient on the other classes
    x = x64.float().requires_grad_()
    focal_loss(x, t, gamma=0.5, reduction="sum").backward()
    assert torch.all(torch.isfinite(x.grad))


@pytest.mark.parametrize("n", [0, 0.0, "tensor"])
@pytest.mark.parametrize("binary", [False, True])
def test_num_items_in_batch_zero_gives_zero(n, binary):
    # the Trainer passes 0 for an accumulated batch in which every label is -100
    n = torch.tensor(0) if n == "tensor" else n
    x = torch.randn(4, 5, requires_grad=True)
    t = torch.full((4, 5), -100.0) if binary else torch.full((4,), -100)
    loss = focal_loss(x, t, num_items_in_batch=n, binary=binary)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(x.grad == 0)


@pytest.mark.parametrize("n", [-1, float("nan"), torch.tensor([1, 2]), "3", True])
def test_num_items_in_batch_bad_values(n):
    with pytest.raises(ValueError, match="num_items_in_batch"):
        focal_loss(torch.zeros(2, 3), torch.tensor([0, 1]), num_items_in_batch=n)


# --------------------------------------------------------------------------- device-readiness

LOSS_SETTINGS = [("ce", {}), ("focal", {"gamma": 2.0}), ("soft_truncation", {}),
                 ("soft_truncation", {"form": "softmax", "k": 1.0}), ("hard_truncation", {"m": 0.6}),
                 ("dice", {})]


@pytest.mark.parametrize("name, options", LOSS_SETTINGS)
@pytest.mark.parametrize("mode", ["mean", "sum", "none", "num_items_tensor", "num_items_int",
                                  "weighted", "binary"])
def test_no_loss_call_reads_a_value_on_the_host(name, options, mode):
    """On the meta device a tensor has no values: any read of one on the host (``.item()``,
    ``bool()``, a data-dependent shape) raises, so a loss that runs forward and backward there
    makes no device wait. On a GPU the same runs under ``set_sync_debug_mode("error")``."""
    devices = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        x = torch.randn(6, 5, 4, device=device, requires_grad=True)
        t = torch.randint(0, 4, (6, 5), device=device)
        kwargs: dict = {}
        if mode in ("mean", "sum", "none"):
            kwargs["reduction"] = mode
        elif mode == "num_items_tensor":
            kwargs["num_items_in_batch"] = (t != -100).sum()
        elif mode == "num_items_int":
            kwargs["num_items_in_batch"] = 17
        elif mode == "weighted":
            kwargs["weight"] = torch.rand(4, device=device) + 0.5
        binary = mode == "binary"
        if binary:
            if options.get("form") == "softmax":
                continue
            t = torch.randint(0, 2, (6, 5, 4), device=device).float()
        fn = build_loss(name, binary=binary, **options, **{k: v for k, v in kwargs.items()
                                                          if k in ("reduction", "weight")})
        if device == "cuda":
            torch.cuda.set_sync_debug_mode("error")
        try:
            loss = fn(x, t, num_items_in_batch=kwargs.get("num_items_in_batch"))
            loss.sum().backward()
        finally:
            if device == "cuda":
                torch.cuda.set_sync_debug_mode("default")
        assert x.grad is not None and x.grad.shape == x.shape


def test_the_meta_device_catches_a_host_read():
    x = torch.randn(3, device="meta")
    with pytest.raises((RuntimeError, NotImplementedError)):
        float(x.sum())


@pytest.mark.parametrize("name, options", LOSS_SETTINGS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "num_items"])
@pytest.mark.parametrize("dynamic", [False, True])
def test_every_loss_traces_as_one_graph(name, options, reduction, dynamic):
    # fullgraph=True: torch.compile fails on any graph break; aot_eager traces forward and
    # backward through AOTAutograd without code generation, so this stays quick; dynamic=True
    # makes shapes and the options' numbers symbolic
    torch.compiler.reset()
    x, t, w = _data(n=24, c=5, dtype=torch.float32)
    fn = build_loss(name, weight=w.float(), reduction="mean" if reduction == "num_items" else reduction,
                    **options)
    call = (lambda z: fn(z, t, num_items_in_batch=20)) if reduction == "num_items" else \
        (lambda z: fn(z, t))
    compiled = torch.compile(call, fullgraph=True, dynamic=dynamic, backend="aot_eager")
    _assert_same(compiled, call, x)


@pytest.mark.parametrize("name, options", LOSS_SETTINGS + [("multilabel_ce", {})])
def test_the_functional_forms_compile_with_symbolic_options(name, options):
    """The functions themselves, options passed at each call (symbolic under dynamic=True):
    checked eagerly, not inside the trace."""
    from seqlab import losses

    fn = {"ce": losses.cross_entropy, "focal": losses.focal_loss,
          "soft_truncation": losses.soft_truncation_loss,
          "hard_truncation": losses.hard_truncation_loss, "dice": losses.dice_loss,
          "multilabel_ce": losses.multilabel_ce}[name]
    torch.compiler.reset()
    x = torch.randn(8, 5, requires_grad=True)
    t = torch.randint(0, 5, (8,)) if name != "multilabel_ce" else torch.randint(0, 2, (8, 5))

    numbers = {k: v for k, v in options.items() if isinstance(v, float)}
    fixed = {k: v for k, v in options.items() if k not in numbers}

    def call(z, n, **opts):  # the numbers arrive as arguments: symbolic when compiled
        return fn(z, t, num_items_in_batch=n, **fixed, **opts)

    compiled = torch.compile(call, fullgraph=True, dynamic=True, backend="aot_eager")
    _assert_same(lambda z: compiled(z, 7, **numbers), lambda z: call(z, 7, **numbers), x)
    # other values of the same options reuse the graph's symbols: still one graph, same values
    other = {k: v * 1.5 for k, v in numbers.items()}
    _assert_same(lambda z: compiled(z, 9, **other), lambda z: call(z, 9, **other), x)


def test_focal_loss_compiled_with_inductor_matches_eager():
    torch.compiler.reset()
    x, t, _ = _data(n=64, c=9, dtype=torch.float32)
    fn = build_loss("focal", gamma=2.0)
    compiled = torch.compile(lambda z: fn(z, t), fullgraph=True)
    va, ga = _value_and_grad(compiled, x)
    vb, gb = _value_and_grad(lambda z: fn(z, t), x)
    torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-7)


def test_building_a_loss_runs_no_loss():
    # options are validated without a forward pass: nothing is computed or compiled
    from seqlab import losses

    import functools

    calls = []

    @functools.wraps(focal_loss)  # the options are the function's keywords
    def spy(*args, **kwargs):
        calls.append(1)
        return focal_loss(*args, **kwargs)

    cls = losses.FocalLoss
    old = cls.fn
    cls.fn = staticmethod(spy)
    try:
        build_loss("focal", gamma=1.0)
        with pytest.raises(ValueError, match="gamma"):
            build_loss("focal", gamma=-1.0)
    finally:
        cls.fn = old
    assert calls == []


def test_a_loss_modules_options_and_defaults_are_its_functions():
    # each option is written once, in the function's signature: the module, the config's
    # checks and build_loss read it from there
    import inspect

    from seqlab.losses import FocalLoss, loss_option_types, loss_registry

    shared = {"weight", "ignore_index", "reduction", "num_items_in_batch", "binary"}
    for name in available_losses():
        cls = loss_registry[name]
        own = {p.name: p.default for p in inspect.signature(cls.fn).parameters.values()
               if p.kind is p.KEYWORD_ONLY and p.name not in shared}
        assert build_loss(name).options == own, name
        assert set(loss_option_types(name)) == set(own) | {"weight"}, name
    assert inspect.signature(FocalLoss).parameters["gamma"].default == 2.0
    with pytest.raises(TypeError, match="FocalLoss takes no option 'k'"):
        FocalLoss(k=1.0)
