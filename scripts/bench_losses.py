"""Forward+backward time and peak memory of every seqlab loss against F.cross_entropy, kornia's
focal loss and torchvision's sigmoid focal loss, at NER and QA shapes, in one run.

    make bench-losses            # or: python scripts/bench_losses.py --repeats 30

Times are medians over ``--repeats`` runs after warm-up. Peak memory is measured on CUDA with
``torch.cuda.max_memory_allocated``; on CPU, with the autograd-saved tensors and outputs counted
through a ``torch.profiler`` memory trace: the peak of the running sum of every op's own
allocations and frees during forward+backward, which includes the gradient of the logits
(N x C x 4 bytes) that any loss must allocate.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seqlab.losses import (cross_entropy, dice_loss, focal_loss, hard_truncation_loss,  # noqa: E402
                           soft_truncation_loss)

SHAPES = [("NER 4,096 tok x 9", 4096, 9), ("NER 65,536 tok x 9", 65536, 9),
          ("QA 64 x 384 pos", 64, 384)]


def candidates():
    c = {
        "F.cross_entropy": lambda x, t: F.cross_entropy(x, t),
        "seqlab ce": lambda x, t: cross_entropy(x, t),
        "seqlab focal g=2": lambda x, t: focal_loss(x, t, gamma=2.0),
        "seqlab soft_trunc margin": lambda x, t: soft_truncation_loss(x, t, k=1.0),
        "seqlab soft_trunc softmax": lambda x, t: soft_truncation_loss(x, t, k=1.0, form="softmax"),
        "seqlab hard_trunc m=0.9": lambda x, t: hard_truncation_loss(x, t, m=0.9),
        "seqlab dice": lambda x, t: dice_loss(x, t),
    }
    try:
        import kornia.losses

        c["kornia focal g=2"] = lambda x, t: kornia.losses.focal_loss(
            x, t, alpha=None, gamma=2.0, reduction="mean")
    except ImportError:
        print("kornia not installed: pip install kornia (make bench-losses does)", file=sys.stderr)
    try:
        from torchvision.ops import sigmoid_focal_loss

        c["torchvision sigmoid focal (binary, N x C)"] = lambda x, t: sigmoid_focal_loss(
            x, F.one_hot(t, x.shape[-1]).to(x.dtype), reduction="mean")
    except Exception as exc:  # noqa: BLE001 - an incompatible build fails at import with odd errors
        print(f"torchvision unavailable ({type(exc).__name__}); its column is skipped",
              file=sys.stderr)
    return c


def peak_extra_bytes(fn, x, t, device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        xx = x.detach().clone().requires_grad_()
        base = torch.cuda.memory_allocated()
        fn(xx, t).backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    xx = x.detach().clone().requires_grad_()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(xx, t).backward()
    # running sum of each op's own allocations and frees, in order (self_: a parent op's figure
    # includes its children's); its maximum is the peak over what existed before the call
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage != 0),
                    key=lambda e: e.time_range.start)
    cur = peak = 0
    for e in events:
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak


def time_it(fn, x, t, repeats: int, device) -> float:
    times = []
    for i in range(repeats + 3):
        xx = x.detach().clone().requires_grad_()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(xx, t).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output", help="also write the table (markdown) here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    lines = [f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
             f"median of {args.repeats} forward+backward runs", ""]
    for label, n, c in SHAPES:
        x = torch.randn(n, c, device=device)
        t = torch.randint(0, c, (n,), device=device)
        t[::10] = -100
        budget = 3 * n * c * 4
        lines += [f"### {label} (budget for extra peak memory: 3 x N x C x 4 = {budget / 2**20:.2f} MiB)",
                  "", "| loss | median ms | x F.cross_entropy | extra peak MiB | x (N*C*4) |",
                  "|---|---:|---:|---:|---:|"]
        base = None
        for name, fn in candidates().items():
            tt = t.clamp_min(0) if ("kornia" in name or "torchvision" in name) else t
            ms = 1000 * time_it(fn, x, tt, args.repeats, device)
            mem = peak_extra_bytes(fn, x, tt, device)
            base = base or ms
            lines.append(f"| {name} | {ms:.3f} | {ms / base:.2f} | {mem / 2**20:.2f} | "
                         f"{mem / (n * c * 4):.2f} |")
        lines.append("")
        print("\n".join(lines[-(len(candidates()) + 4):]), flush=True)
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[:1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
