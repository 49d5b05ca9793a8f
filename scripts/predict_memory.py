"""Peak memory of `seqlab predict` against the input's length: it should stay flat.

    python scripts/predict_memory.py runs/conll2003-ce --lines 10000,100000

Each size is a file of CoNLL-2003 test sentences (joined by spaces, repeated to the length),
predicted by `seqlab predict` in a process of its own; its peak RSS is the kernel's figure for
that process (``wait4``), with the wall time.
"""

from __future__ import annotations

import argparse
import os
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
    p.add_argument("--data-dir", default=os.environ.get("SEQLAB_DATA"))
    args = p.parse_args(argv)
    from seqlab.data.registry import load_named

    texts = [" ".join(s.tokens) for s in load_named("conll2003", args.data_dir)[0]["test"]]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.lines.split(",")):
            src = Path(tmp) / f"in-{n}.txt"
            src.write_text("\n".join(texts[k % len(texts)] for k in range(n)) + "\n")
            out = Path(tmp) / "out.jsonl"
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "seqlab.cli", "predict", args.run,
                                     str(src), "--output", str(out), "--no-progress"], cwd=ROOT)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"predict failed on {n} lines")
            assert sum(1 for _ in open(out)) == n
            rows.append((n, usage.ru_maxrss / 1024, wall))
            print(f"{n} lines: peak RSS {usage.ru_maxrss / 1024:.0f} MiB, {wall:.0f} s "
                  f"({n / wall:.0f} lines/s)", flush=True)
    print("\n| lines | peak RSS (MiB) | wall (s) | lines/s |\n|---:|---:|---:|---:|")
    for n, rss, wall in rows:
        print(f"| {n} | {rss:.0f} | {wall:.0f} | {n / wall:.0f} |")
    if len(rows) > 1:
        print(f"\npeak RSS at {rows[-1][0]} lines / at {rows[0][0]} lines: "
              f"{rows[-1][1] / rows[0][1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
