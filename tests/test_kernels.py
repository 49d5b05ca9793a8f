"""The compiled CPU loss kernel against the torch implementation of the same losses."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from seqlab import kernels
from seqlab.losses import (cross_entropy, dice_loss, focal_loss, hard_truncation_loss,
                           soft_truncation_loss)


def _can_build() -> bool:
    """A C++ compiler, ninja and the Python headers: with all three the build must work."""
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return False
    has_ninja = shutil.which("ninja") is not None
    try:
        import ninja  # noqa: F401

        has_ninja = True
    except ImportError:
        pass
    return has_ninja and any(shutil.which(c) for c in ("c++", "g++", "clang++"))


needs_kernel = pytest.mark.skipif(kernels.losses() is None,
                                  reason=f"no compiled kernel: {kernels.status()}")

LOSSES = {
    "ce": lambda x, t, **kw: cross_entropy(x, t, **kw),
    "focal g=2": lambda x, t, **kw: focal_loss(x, t, gamma=2.0, **kw),
    "focal g=0.5": lambda x, t, **kw: focal_loss(x, t, gamma=0.5, **kw),
    "focal g=0": lambda x, t, **kw: focal_loss(x, t, gamma=0.0, **kw),
    "soft margin K=1": lambda x, t, **kw: soft_truncation_loss(x, t, k=1.0, **kw),
    "soft margin K=0": lambda x, t, **kw: soft_truncation_loss(x, t, k=0.0, **kw),
    "soft softmax K=1": lambda x, t, **kw: soft_truncation_loss(x, t, k=1.0, form="softmax", **kw),
    "soft softmax K=0": lambda x, t, **kw: soft_truncation_loss(x, t, k=0.0, form="softmax", **kw),
    "soft softmax K=2.5": lambda x, t, **kw: soft_truncation_loss(x, t, k=2.5, form="softmax", **kw),
    "hard m=0.6": lambda x, t, **kw: hard_truncation_loss(x, t, m=0.6, **kw),
    "hard m=1": lambda x, t, **kw: hard_truncation_loss(x, t, m=1.0, **kw),
    "dice a=1": lambda x, t, **kw: dice_loss(x, t, **kw),
    "dice a=0": lambda x, t, **kw: dice_loss(x, t, alpha=0.0, smooth=0.5, **kw),
}

OPTIONS = {
    "mean": {},
    "sum": {"reduction": "sum"},
    "none": {"reduction": "none"},
    "num_items": {"num_items_in_batch": 37},
    "weighted mean": {"weight": "w"},
    "weighted none": {"weight": "w", "reduction": "none"},
}


def _inputs(shape, num_classes, seed, spread=4.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, num_classes, generator=g) * spread
    t = torch.randint(0, num_classes, shape, generator=g)
    t[torch.rand(shape, generator=g) < 0.2] = -100
    return x, t


def _both(fn, x, t, **kw):
    """(value, gradient) through the compiled kernel and through torch operations."""
    out = []
    for compiled in (True, False):
        xx = x.clone().requires_grad_()
        if compiled:
            value = fn(xx, t, **kw)
        else:
            with kernels.disabled():
                value = fn(xx, t, **kw)
        value.sum().backward()
        out.append((value.detach(), xx.grad))
    return out


@pytest.mark.skipif(not _can_build(), reason="no C++ compiler, ninja or Python headers here")
@pytest.mark.skipif(kernels._OFF_AT_IMPORT, reason="SEQLAB_COMPILED=0")
def test_builds_where_a_compiler_is_present():
    assert kernels.losses() is not None, kernels.status()
    assert kernels.status().startswith("compiled kernel")


@needs_kernel
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("num_classes", [2, 9, 40])
def test_compiled_equals_torch(name, option, num_classes):
    # 9 classes: rows under one vector (plain loops); 40: vector loops with a partial last one
    x, t = _inputs((3, 11), num_classes, seed=num_classes)
    kw = dict(OPTIONS[option])
    if kw.get("weight") == "w":
        kw["weight"] = torch.linspace(0.5, 2.0, num_classes)
    (v1, g1), (v2, g2) = _both(LOSSES[name], x, t, **kw)
    assert v1.shape == v2.shape
    torch.testing.assert_close(v1, v2, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(g1, g2, rtol=2e-5, atol=1e-7)


@needs_kernel
@pytest.mark.parametrize("name", list(LOSSES))
def test_compiled_equals_torch_at_the_qa_shape_with_masked_positions(name):
    # span QA: (batch, positions) with padding masked to -inf, and confident rows
    x, t = _inputs((16,), 384, seed=3, spread=3.0)
    x[:, 300:] = -math.inf
    t = t.clamp(max=299).masked_fill(t < 0, -100)
    x[0, 5] += 60.0
    t[0] = 5
    (v1, g1), (v2, g2) = _both(LOSSES[name], x, t)
    torch.testing.assert_close(v1, v2, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(g1, g2, rtol=2e-5, atol=1e-7)
    assert torch.all(g1[:, 300:] == 0)


@needs_kernel
def test_compiled_gradient_is_exact_where_the_target_dominates():
    # p_t rounds to 1 in float32; the float64 torch implementation is the reference
    for margin in (10.0, 30.0, 50.0):  # gradients down to ~1e-33, above float32's normals
        x = torch.randn(8, 12, generator=torch.Generator().manual_seed(1))
        t = torch.arange(8)
        x[torch.arange(8), t] += margin
        xx = x.clone().requires_grad_()
        focal_loss(xx, t, gamma=0.5, reduction="sum").backward()
        x64 = x.double().requires_grad_()
        focal_loss(x64, t, gamma=0.5, reduction="sum").backward()
        torch.testing.assert_close(xx.grad.double(), x64.grad, rtol=1e-4, atol=0.0)


@needs_kernel
def test_compiled_path_details():
    x, t = _inputs((4, 6), 5, seed=7)
    # non-contiguous logits, int32 targets, half precision in and out
    xt = x.transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    ref = focal_loss(x, t)
    torch.testing.assert_close(focal_loss(xt, t.int()), ref)
    xh = x.half().requires_grad_()
    focal_loss(xh, t).backward()
    assert xh.grad.dtype == torch.float16 and torch.isfinite(xh.grad).all()
    # without grad, the same value
    with torch.no_grad():
        torch.testing.assert_close(focal_loss(x, t), ref)
    # backward twice on a kept graph accumulates
    xx = x.clone().requires_grad_()
    loss = focal_loss(xx, t)
    loss.backward(retain_graph=True)
    first = xx.grad.clone()
    loss.backward()
    torch.testing.assert_close(xx.grad, 2 * first)
    # an all-ignored batch: 0, zero gradient
    xx = x.clone().requires_grad_()
    out = dice_loss(xx, torch.full_like(t, -100))
    out.backward()
    assert out.item() == 0.0 and torch.all(xx.grad == 0)
    # an empty batch
    assert cross_entropy(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)).item() == 0.0


@needs_kernel
def test_compiled_target_error_is_a_value_error():
    with pytest.raises(ValueError, match=r"target holds 7, expected a class index in \[0, 5\)"):
        focal_loss(torch.zeros(3, 5), torch.tensor([0, 7, -100]))
    with pytest.raises(ValueError, match=r"target holds -3"):
        cross_entropy(torch.zeros(3, 5).requires_grad_(), torch.tensor([0, -3, 1]))


def test_switched_off_by_the_environment():
    env = dict(os.environ, SEQLAB_COMPILED="0")
    out = subprocess.run(
        [sys.executable, "-c",
         "import torch, seqlab.kernels as k, seqlab.losses as L;"
         "print(k.status()); print(k.losses() is None);"
         "print(float(L.focal_loss(torch.zeros(2, 3), torch.tensor([0, 1]), gamma=0.0)))"],
        env=env, capture_output=True, text=True, check=True)
    lines = out.stdout.split("\n")
    assert lines[0].startswith("torch operations (SEQLAB_COMPILED=0")
    assert lines[1] == "True"
    assert abs(float(lines[2]) - math.log(3)) < 1e-6


def test_a_failed_build_falls_back_and_is_not_retried(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    calls = []

    def no_compiler(**kwargs):
        calls.append(kwargs["name"])
        raise RuntimeError("Error building extension 'seqlab_losses': c++: not found")

    monkeypatch.setenv("SEQLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(kernels, "_OFF_AT_IMPORT", False)
    monkeypatch.setattr(kernels, "_tried", False)
    monkeypatch.setattr(kernels, "_module", None)
    with pytest.warns(RuntimeWarning, match="c\\+\\+: not found"):
        assert kernels.losses() is None
    assert len(calls) == 1
    assert "c++: not found" in kernels.status()
    # the losses still run, as torch operations
    assert abs(float(focal_loss(torch.zeros(2, 3), torch.tensor([0, 1]), gamma=0.0))
               - math.log(3)) < 1e-6
    # a new process (here: a fresh state) does not spend another build on the same source
    monkeypatch.setattr(kernels, "_tried", False)
    with pytest.warns(RuntimeWarning, match="an earlier build failed"):
        assert kernels.losses() is None
    assert len(calls) == 1
    marker = next(tmp_path.rglob("build-failed.txt"))
    marker.unlink()
    monkeypatch.setattr(kernels, "_tried", False)
    with pytest.warns(RuntimeWarning):
        kernels.losses()
    assert len(calls) == 2
