"""Everything only a GPU can show, in one run (``make check-gpu``), its figures written to
``benchmarks/gpu/check.md``:

1. the unit tests (``-m "not slow"``; on a GPU the losses also run under
   ``torch.cuda.set_sync_debug_mode("error")``) and the CUDA-marked tests;
2. a training run on the GPU with ``set_sync_debug_mode("error")`` switched on for the whole
   loop except the parts that read the device on purpose (the log interval, checkpoints,
   evaluation): any other host-device synchronisation in a step fails it;
3. one epoch of CoNLL-2003 with seqlab in float32, under bf16 autocast and with
   ``train.compile``, beside the Hugging Face Trainer with its speed flags
   (``scripts/bench_ner.py --loops``): tokens/s and F1;
4. two processes on two GPUs against one (when two are there).

It stops at the first failure; the budget is about 8 minutes on one GPU (``--epochs``,
``--limit`` cut it further).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, text=True, **kw)


def sync_free_training(work: Path, data_dir: str | None) -> str:
    """A short CoNLL-2003 run on the GPU, every synchronisation outside the device reads it
    does on purpose an error."""
    import seqlab.train as T
    from seqlab.assemble import config_from_dict
    from seqlab.tasks import get_task

    def permitted(fn):
        def wrapped(*args, **kwargs):
            torch.cuda.set_sync_debug_mode("default")
            try:
                return fn(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("error")
        return wrapped

    # the parts that read the device on purpose, once per interval, checkpoint or epoch
    T.MetricsLog.train = permitted(T.MetricsLog.train)
    T.NonFiniteGuard.check = permitted(T.NonFiniteGuard.check)
    T.Checkpoints.save = permitted(T.Checkpoints.save)
    T.evaluate_epoch = permitted(T.evaluate_epoch)
    T.finish = permitted(T.finish)
    cfg = config_from_dict({"task": "ner", "data": {"dataset": "conll2003", "data_dir": data_dir,
                                                    "limit": 640, "eval_limit": 200},
                            "model": {"encoder": "minilm-l6"},
                            "train": {"epochs": 1, "log_every": 20, "output_dir": str(work / "sync"),
                                      "overwrite": True, "save_model": False,
                                      "checkpoint_every": 30}})
    task = get_task("ner").from_config(cfg)
    model = task.new_model()
    torch.cuda.set_sync_debug_mode("error")
    try:
        result = T.train(cfg, task, model, task.tokenizer, progress=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return (f"{result['steps']} optimizer steps (log every 20, a checkpoint at step 30) under "
            f"set_sync_debug_mode('error'): no synchronisation outside the log interval, "
            f"checkpoints and evaluation; dev F1 {100 * result['dev']['default']['f1']:.2f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=float, default=1)
    p.add_argument("--limit", type=int, help="first N CoNLL-2003 training sentences")
    p.add_argument("--data-dir", default=os.environ.get("SEQLAB_DATA"))
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "gpu" / "check.md"))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("check_gpu: no CUDA device here; run it on a GPU machine", file=sys.stderr)
        return 2
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = ROOT / "runs" / "check-gpu"
    lines = [f"# GPU check: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}", "",
             f"torch {torch.__version__}, CUDA {torch.version.cuda}; {time.strftime('%Y-%m-%d')}", ""]
    t0 = time.perf_counter()
    tests = run([sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-x"],
                capture_output=True)
    lines.append(f"1. unit tests on the GPU machine: {tests.stdout.strip().splitlines()[-1]}")
    if tests.returncode:
        print(tests.stdout[-3000:])
        out.write_text("\n".join(lines) + "\n")
        return 1
    lines.append(f"2. {sync_free_training(work, args.data_dir)}")
    bench = work / "bench.json"
    cmd = [sys.executable, "scripts/bench_ner.py", "--loops", "seqlab,seqlab-bf16,seqlab-compile,trainer",
           "--epochs", str(args.epochs), "--no-progress", "--output", str(bench),
           "--predict-repeats", "1"]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    res = run(cmd, capture_output=True)
    lines += ["3. one epoch of CoNLL-2003 (`scripts/bench_ner.py`):", "", res.stdout.strip(), ""]
    if torch.cuda.device_count() >= 2:
        two = run(["torchrun", "--nproc_per_node", "2", "-m", "seqlab.cli", "train",
                   "configs/conll2003.yaml", "train.epochs=1", f"train.output_dir={work / 'two'}",
                   "train.overwrite=true", "train.save_model=false", "--no-progress"],
                  capture_output=True)
        m = json.loads((work / "two" / "metrics.json").read_text()) if two.returncode == 0 else {}
        lines.append(f"4. two GPUs: exit {two.returncode}; "
                     f"{m.get('train_tokens_per_s', 0):.0f} real tokens/s, test F1 "
                     f"{100 * m.get('test', {}).get('default', {}).get('f1', 0):.2f}")
    else:
        lines.append("4. one GPU only: the two-process run was not made")
    lines += ["", f"All of it took {time.perf_counter() - t0:.0f} s."]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
