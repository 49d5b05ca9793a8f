"""SQuAD v1.1 (dev split by title, 80/20), pointer head, cross-entropy against focal loss.

    make bench-qa                                  # full split, 2 epochs each
    python scripts/bench_qa.py --limit 500 --eval-limit 300 --epochs 1   # shorter

Prints EM/F1 on the held-out 20% of articles, training tokens/s and wall time, per loss.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqlab.assemble import load_config
from seqlab.train import train_config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--limit", type=int)
    p.add_argument("--eval-limit", type=int)
    p.add_argument("--data-dir", default=os.environ.get("SEQLAB_DATA"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    root = Path(__file__).resolve().parents[1] / "configs"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg_file in (("ce", "squad-dev-split.yaml"), ("focal g=2", "squad-dev-split-focal.yaml")):
            out = Path(tmp) / name.replace(" ", "_").replace("=", "")
            overrides = [f"train.epochs={args.epochs}", f"train.output_dir={out}"]
            if args.data_dir:
                overrides.append(f"data.data_dir={args.data_dir}")
            if args.limit:
                overrides.append(f"data.limit={args.limit}")
            if args.eval_limit:
                overrides.append(f"data.eval_limit={args.eval_limit}")
            cfg = load_config(root / cfg_file, overrides)
            t0 = time.perf_counter()
            train_config(cfg, progress=not args.no_progress)
            wall = time.perf_counter() - t0
            m = json.loads((out / "metrics.json").read_text())
            rows.append((name, 100 * m["dev"]["exact_match"], 100 * m["dev"]["f1"],
                         m["train_tokens_per_s"], wall, m["dev"]["questions"]))
    print(f"\nsquad-v1.1-dev-split, minilm-l6, pointer head, epochs {args.epochs}, "
          f"train limit {args.limit}, eval limit {args.eval_limit}")
    print("| loss | EM | F1 | train tokens/s | wall s | eval questions |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.2f} | {r[2]:.2f} | {r[3]:.0f} | {r[4]:.0f} | {r[5]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
