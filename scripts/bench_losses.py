"""Forward+backward time and peak memory of every seqlab loss against F.cross_entropy, kornia's
focal loss and torchvision's sigmoid focal loss, at NER and QA shapes, eager and compiled, and
each loss's share of a whole training step of the embedded encoder, in one run.

    make bench-losses            # or: python scripts/bench_losses.py --repeats 30

Times are medians over ``--repeats`` runs after warm-up, in interleaved rounds (per round, each
loss once untimed and once timed, so that none is timed on caches another one left). "compiled"
is ``torch.compile(loss)`` (Inductor: C++ on the CPU, Triton on a GPU), timed after its first
calls. Peak memory is measured on CUDA with ``torch.cuda.max_memory_allocated``; on CPU, through
a ``torch.profiler`` memory trace: the peak of the allocator's running total during
forward+backward, less what was allocated before, which includes the gradient of the logits
(N x C x 4 bytes) that any loss must allocate.

The share of a training step: the median time of one optimizer step of the embedded encoder
(forward, the loss, backward, fused AdamW) at the NER shape (batch 16 x 24 subwords, the mean
CoNLL-2003 sentence, 9 labels) and the QA shape (batch 16 x 384, start and end over positions),
against the loss's own forward+backward time at the logits' shape.
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
import transformers  # noqa: F401  before any torchvision is on the path: see torchvision_focal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seqlab.losses import (
    cross_entropy,
    dice_loss,
    focal_loss,
    hard_truncation_loss,
    soft_truncation_loss,
)

SHAPES = [("NER 4,096 tok x 9", 4096, 9), ("NER 65,536 tok x 9", 65536, 9),
          ("QA 64 x 384 pos", 64, 384)]


def seqlab_losses() -> dict:
    return {
        "seqlab ce": lambda x, t: cross_entropy(x, t),
        "seqlab focal g=2": lambda x, t: focal_loss(x, t, gamma=2.0),
        "seqlab soft_trunc margin": lambda x, t: soft_truncation_loss(x, t, k=1.0),
        "seqlab soft_trunc softmax": lambda x, t: soft_truncation_loss(x, t, k=1.0, form="softmax"),
        "seqlab hard_trunc m=0.9": lambda x, t: hard_truncation_loss(x, t, m=0.9),
        "seqlab dice": lambda x, t: dice_loss(x, t),
    }


def candidates(compiled: bool = True, torchvision_dir: str | None = None):
    c = {"F.cross_entropy": lambda x, t: F.cross_entropy(x, t), **seqlab_losses()}
    if compiled:
        c["F.cross_entropy, compiled"] = torch.compile(lambda x, t: F.cross_entropy(x, t))
        for name in list(c):
            if name.startswith("seqlab"):
                c[f"{name}, compiled"] = torch.compile(c[name])
    try:
        import kornia.losses

        c["kornia focal g=2"] = lambda x, t: kornia.losses.focal_loss(
            x, t, alpha=None, gamma=2.0, reduction="mean")
    except ImportError:
        print("kornia not installed: pip install kornia (make bench-losses does)", file=sys.stderr)
    tv = torchvision_focal(torchvision_dir)
    if tv is not None:
        fn, label = tv
        c[f"torchvision sigmoid focal ({label}; binary, N x C)"] = lambda x, t: fn(
            x, F.one_hot(t, x.shape[-1]).to(x.dtype), reduction="mean")
    return c


def torchvision_focal(directory: str | None = None):
    """``torchvision.ops.sigmoid_focal_loss`` and a label, or None; ``directory`` holds a
    torchvision installed apart (``make bench-losses`` puts it in ``.bench-deps``, so that
    transformers, imported first, never sees it).

    The torchvision wheel on PyPI for this torch is built against CUDA; beside torch's CPU build
    its compiled operators fail to register and ``import torchvision`` raises. The focal loss
    itself is plain torch code, so then its source file, as installed, is run on its own with
    the one line that needs the package (API-usage logging) replaced by a no-op.
    """
    if directory:
        sys.path.insert(0, directory)
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


def step_share(repeats: int, device) -> list[str]:
    """Each loss's forward+backward time against a whole training step of the embedded encoder
    that uses it, at the NER and QA shapes."""
    from seqlab.models import load_question_answering, load_token_classifier
    from seqlab.train import make_optimizer

    lines = ["### The loss's share of a training step (embedded encoder, fused AdamW)", "",
             "| shape | loss | step ms | loss fwd+bwd ms | share of the step |",
             "|---|---|---:|---:|---:|"]
    g = torch.Generator().manual_seed(0)
    for label, kind, b, length in (("NER 16 x 24, 9 labels", "ner", 16, 24),
                                   ("QA 16 x 384", "qa", 16, 384)):
        if kind == "ner":
            model = load_token_classifier("minilm-l6", [f"L{i}" for i in range(9)])
        else:
            model = load_question_answering("minilm-l6")
        model.to(device).train()
        opt = make_optimizer(model, 0.01, 1e-5)
        ids = torch.randint(1000, 20000, (b, length), generator=g).to(device)
        labels = torch.randint(0, 9, (b, length), generator=g).to(device)
        labels[:, 0] = -100
        pos = torch.randint(0, length, (2, b), generator=g).to(device)
        n = max(3, repeats // 4) if kind == "qa" else repeats
        for name, fn in {"F.cross_entropy": lambda x, t: F.cross_entropy(x, t),
                         **seqlab_losses()}.items():
            def loss_of(out):
                if kind == "ner":
                    return fn(out.logits.reshape(-1, 9), labels.reshape(-1))
                return (fn(out.start_logits, pos[0]) + fn(out.end_logits, pos[1])) / 2

            def step():
                loss_of(model(input_ids=ids)).backward()
                opt.step()
                opt.zero_grad()

            times = []
            for i in range(n + 1):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i:
                    times.append(time.perf_counter() - t0)
            step_s = statistics.median(times)
            if kind == "ner":
                x = torch.randn(b * length, 9, device=device)
                loss_s = time_all({name: fn}, x, lambda _: labels.reshape(-1), repeats, device)[name]
            else:
                x = torch.randn(b, length, device=device)
                loss_s = 2 * time_all({name: fn}, x, lambda _: pos[0], repeats, device)[name]
            lines.append(f"| {label} | {name} | {1000 * step_s:.1f} | {1000 * loss_s:.3f} | "
                         f"{100 * loss_s / step_s:.2f}% |")
            print(lines[-1], flush=True)
    lines.append("")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output", help="also write the table (markdown) here")
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--no-step", action="store_true", help="skip the share of a training step")
    p.add_argument("--torchvision-dir", help="a directory holding torchvision (make bench-losses)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    fns = candidates(compiled=not args.no_compile, torchvision_dir=args.torchvision_dir)
    lines = [(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
             f"median of {args.repeats} forward+backward runs"), ""]
    for label, n, c in SHAPES:
        x = torch.randn(n, c, device=device)
        t = torch.randint(0, c, (n,), device=device)
        t[::10] = -100
        budget = 3 * n * c * 4
        lines += [f"### {label} (budget for extra peak memory: 3 x N x C x 4 = {budget / 2**20:.2f} MiB)",
                  "", "| loss | median ms | x F.cross_entropy (same mode) | extra peak MiB | x (N*C*4) |",
                  "|---|---:|---:|---:|---:|"]

        def t_of(name, t=t):  # the references have no ignore_index: ignored items become class 0
            return t.clamp_min(0) if ("kornia" in name or "torchvision" in name) else t

        secs = time_all(fns, x, t_of, args.repeats, device)
        for name, fn in fns.items():
            ms = 1000 * secs[name]
            base = 1000 * secs["F.cross_entropy, compiled" if name.endswith(", compiled")
                                else "F.cross_entropy"]
            mem = peak_extra_bytes(fn, x, t_of(name), device)
            lines.append(f"| {name} | {ms:.3f} | {ms / base:.2f} | {mem / 2**20:.2f} | "
                         f"{mem / (n * c * 4):.2f} |")
        lines.append("")
        print("\n".join(lines[-(len(fns) + 6):]), flush=True)
    if not args.no_step:
        lines += step_share(args.repeats, device)
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[:1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
