"""Peak memory of `seqlab predict` against the input's length: it should stay flat.

    python scripts/predict_memory.py runs/conll2003-ce --lines 10000,100000
    python scripts/predict_memory.py runs/conll2003-ce --lines 20000 --heaps fixed,dynamic --repeats 3

Each size is a file of CoNLL-2003 test sentences (joined by spaces, repeated to the length),
predicted by `seqlab predict` in a process of its own; its peak RSS is the kernel's figure for
that process (``wait4``), with the wall time (model loading included). ``--heaps`` sets
``SEQLAB_MMAP_THRESHOLD`` for the runs: ``fixed`` is seqlab's default (seqlab.memory),
``dynamic`` glibc's own threshold; with ``--repeats`` the runs are interleaved and the table
gives their medians.

``--in-process N`` instead predicts N blocks of 2,048 lines one after another in this process,
as `seqlab predict` does, and prints the peak RSS and lines/s after each block: how the heap
grows block by block. It takes the allocator's settings from the environment
(``SEQLAB_MMAP_THRESHOLD``, or glibc's ``MALLOC_MMAP_THRESHOLD_`` and ``GLIBC_TUNABLES``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--lines", default="10000,100000")
    p.add_argument("--heaps", default="fixed", help="fixed, dynamic or both (comma-separated)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--in-process", type=int, metavar="N", help="N blocks in this process")
    p.add_argument("--data-dir", default=os.environ.get("SEQLAB_DATA"))
    args = p.parse_args(argv)
    heaps = args.heaps.split(",")
    if not set(heaps) <= {"fixed", "dynamic"}:
        p.error("--heaps: fixed, dynamic or both")
    from seqlab.data.registry import load_named

    texts = [" ".join(s.tokens) for s in load_named("conll2003", args.data_dir)[0]["test"]]
    if args.in_process:
        return in_process(args.run, texts, args.in_process)
    runs: dict[tuple[int, str], list[tuple[float, float]]] = {}
    sizes = [int(x) for x in args.lines.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            src = Path(tmp) / f"in-{n}.txt"
            src.write_text("\n".join(texts[k % len(texts)] for k in range(n)) + "\n")
            out = Path(tmp) / "out.jsonl"
            for _ in range(args.repeats):
                for heap in heaps:
                    env = dict(os.environ, SEQLAB_MMAP_THRESHOLD="dynamic") if heap == "dynamic" \
                        else {k: v for k, v in os.environ.items() if k != "SEQLAB_MMAP_THRESHOLD"}
                    t0 = time.perf_counter()
                    proc = subprocess.Popen([sys.executable, "-m", "seqlab.cli", "predict", args.run,
                                             str(src), "--output", str(out), "--no-progress"],
                                            cwd=ROOT, env=env)
                    _, status, usage = os.wait4(proc.pid, 0)
                    wall = time.perf_counter() - t0
                    if os.waitstatus_to_exitcode(status) != 0:
                        raise SystemExit(f"predict failed on {n} lines")
                    assert sum(1 for _ in open(out)) == n
                    runs.setdefault((n, heap), []).append((usage.ru_maxrss / 1024, wall))
                    print(f"{n} lines, {heap} threshold: peak RSS {usage.ru_maxrss / 1024:.0f} MiB, "
                          f"{wall:.0f} s ({n / wall:.0f} lines/s)", flush=True)
    print("\n| lines | mmap threshold | peak RSS (MiB) | wall (s) | lines/s |\n|---:|---|---:|---:|---:|")
    for (n, heap), rs in runs.items():
        rss, wall = statistics.median(r for r, _ in rs), statistics.median(w for _, w in rs)
        print(f"| {n} | {heap} | {rss:.0f} | {wall:.0f} | {n / wall:.0f} |")
    if len(sizes) > 1:
        for heap in heaps:
            lo, hi = (statistics.median(r for r, _ in runs[(n, heap)]) for n in (sizes[0], sizes[-1]))
            print(f"\n{heap} threshold: peak RSS at {sizes[-1]} lines / at {sizes[0]} lines: "
                  f"{hi / lo:.3f}")
    return 0


def in_process(run: str, texts: list[str], n: int) -> int:
    import resource

    from seqlab.memory import fix_mmap_threshold
    from seqlab.assemble import load_run
    from seqlab.tasks import PredictOptions
    from seqlab.tasks.ner_inference import PREDICT_BLOCK_LINES

    print(f"mmap threshold fixed: {fix_mmap_threshold()}", flush=True)
    task, r = load_run(run)
    predictor = task.predictor(r, PredictOptions())
    print("| block | peak RSS (MiB) | lines/s |\n|---:|---:|---:|")
    for b in range(n):
        block = [texts[(b * PREDICT_BLOCK_LINES + i) % len(texts)] for i in range(PREDICT_BLOCK_LINES)]
        t0 = time.perf_counter()
        predictor.predict(block)
        rate = len(block) / (time.perf_counter() - t0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"| {b + 1} | {peak:.0f} | {rate:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
