"""Forward+backward time and peak memory of every seqlab loss against F.cross_entropy, kornia's
focal loss and torchvision's sigmoid focal loss, at NER and QA shapes, in one run.

    make bench-losses            # or: python scripts/bench_losses.py --repeats 30

Times are medians over ``--repeats`` runs after warm-up, in interleaved rounds (per round, each
loss once untimed and once timed, so that none is timed on caches another one left). Peak
memory is measured on CUDA with ``torch.cuda.max_memory_allocated``; on CPU, through a
``torch.profiler`` memory trace: the peak of the allocator's running total
during forward+backward, less what was allocated before, which includes the gradient of the
logits (N x C x 4 bytes) that any loss must allocate.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seqlab import kernels  # noqa: E402
from seqlab.losses import (cross_entropy, dice_loss, focal_loss, hard_truncation_loss,  # noqa: E402
                           soft_truncation_loss)


def torch_ops(fn):
    """``fn`` with seqlab's losses run as torch operations (no compiled kernel)."""
    def run(x, t):
        with kernels.disabled():
            return fn(x, t)
    return run

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
    if kernels.losses() is not None:  # what runs without the kernel (other devices, no compiler)
        c["seqlab ce, torch ops"] = torch_ops(c["seqlab ce"])
        c["seqlab focal g=2, torch ops"] = torch_ops(c["seqlab focal g=2"])
    try:
        import kornia.losses

        c["kornia focal g=2"] = lambda x, t: kornia.losses.focal_loss(
            x, t, alpha=None, gamma=2.0, reduction="mean")
    except ImportError:
        print("kornia not installed: pip install kornia (make bench-losses does)", file=sys.stderr)
    tv = torchvision_focal()
    if tv is not None:
        fn, label = tv
        c[f"torchvision sigmoid focal ({label}; binary, N x C)"] = lambda x, t: fn(
            x, F.one_hot(t, x.shape[-1]).to(x.dtype), reduction="mean")
    return c


def torchvision_focal():
    """``torchvision.ops.sigmoid_focal_loss`` and a label, or None.

    The torchvision wheel on PyPI for this torch is built against CUDA; beside torch's CPU build
    its compiled operators fail to register and ``import torchvision`` raises. The focal loss
    itself is plain torch code, so then its source file, as installed, is run on its own with
    the one line that needs the package (API-usage logging) replaced by a no-op.
    """
    try:
        import torchvision
        from torchvision.ops import sigmoid_focal_loss

        return sigmoid_focal_loss, torchvision.__version__
    except Exception as exc:  # noqa: BLE001 - an incompatible build fails at import with odd errors
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    try:
        version = importlib.metadata.version("torchvision")
        files = importlib.metadata.files("torchvision") or []
        path = next(f.locate() for f in files
                    if str(f).replace("\\", "/") == "torchvision/ops/focal_loss.py")
    except (importlib.metadata.PackageNotFoundError, StopIteration):
        print(f"torchvision unavailable ({reason}); its column is skipped", file=sys.stderr)
        return None
    source = Path(path).read_text(encoding="utf-8")
    line = "from ..utils import _log_api_usage_once"
    if line not in source:
        print("torchvision's focal_loss.py has changed; its column is skipped", file=sys.stderr)
        return None
    namespace: dict = {}
    exec(compile(source.replace(line, "def _log_api_usage_once(obj):\n    pass"), str(path), "exec"),
         namespace)
    print(f"torchvision {version} does not import here ({reason}); its sigmoid_focal_loss is run "
          f"from its source file {path}", file=sys.stderr)
    return namespace["sigmoid_focal_loss"], f"{version}, from source"


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
    # every allocation and free is a "[memory]" event carrying the allocator's running total;
    # the peak of that total, less what was allocated before the first event, is the extra peak
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    mem = sorted((e for e in events if e.get("name") == "[memory]"
                  and e["args"].get("Device Type") == 0), key=lambda e: float(e["ts"]))
    if not mem:
        return 0
    base = mem[0]["args"]["Total Allocated"] - mem[0]["args"]["Bytes"]
    return max(e["args"]["Total Allocated"] for e in mem) - base


def time_all(fns: dict, x, t_of, repeats: int, device) -> dict[str, float]:
    """Median seconds of forward+backward for every function, timed in interleaved rounds (one
    run of each per round), so that a change in the machine's load hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(repeats + 3):
        for name, fn in fns.items():
            # one untimed run first, so that no loss is timed on caches the previous one left
            for timed in (False, True):
                xx = x.detach().clone().requires_grad_()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn(xx, t_of(name)).backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if timed and i >= 3:
                    times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output", help="also write the table (markdown) here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    fns = candidates()
    lines = [f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
             f"median of {args.repeats} forward+backward runs; seqlab's CPU losses: "
             f"{kernels.status()}", ""]
    for label, n, c in SHAPES:
        x = torch.randn(n, c, device=device)
        t = torch.randint(0, c, (n,), device=device)
        t[::10] = -100
        budget = 3 * n * c * 4
        lines += [f"### {label} (budget for extra peak memory: 3 x N x C x 4 = {budget / 2**20:.2f} MiB)",
                  "", "| loss | median ms | x F.cross_entropy | extra peak MiB | x (N*C*4) |",
                  "|---|---:|---:|---:|---:|"]
        base = None

        def t_of(name, t=t):  # the references have no ignore_index: ignored items become class 0
            return t.clamp_min(0) if ("kornia" in name or "torchvision" in name) else t

        secs = time_all(fns, x, t_of, args.repeats, device)
        for name, fn in fns.items():
            ms = 1000 * secs[name]
            mem = peak_extra_bytes(fn, x, t_of(name), device)
            base = base or ms
            lines.append(f"| {name} | {ms:.3f} | {ms / base:.2f} | {mem / 2**20:.2f} | "
                         f"{mem / (n * c * 4):.2f} |")
        lines.append("")
        print("\n".join(lines[-(len(fns) + 6):]), flush=True)
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[:1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
