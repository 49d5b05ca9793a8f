"""Train the same NER setup with several losses, cross-entropy as the baseline, and print a table.

    python scripts/study_losses.py --dataset wnut17 --seeds 42
    python scripts/study_losses.py --dataset conll2003 --seeds 1 2 3 --epochs 3

Every run uses the dataset's baseline config (configs/DATASET.yaml) with only the loss changed.
Scores are seqeval default-mode entity F1 on dev and test; with several seeds the table shows
the median and the spread (min-max).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqlab.cli import main as cli_main  # noqa: E402

LOSSES = {
    "ce": ["loss.name=ce"],
    "focal g=2": ["loss.name=focal", "loss.gamma=2.0"],
    "soft_trunc margin K=1": ["loss.name=soft_truncation", "loss.k=1.0", "loss.form=margin"],
    "soft_trunc softmax K=1": ["loss.name=soft_truncation", "loss.k=1.0", "loss.form=softmax"],
    "hard_trunc m=0.9": ["loss.name=hard_truncation", "loss.m=0.9"],
    "dice": ["loss.name=dice"],
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="wnut17")
    p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    p.add_argument("--seeds", nargs="+", type=int, default=[42])
    p.add_argument("--epochs", type=float)
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    config = Path(__file__).resolve().parents[1] / "configs" / f"{args.dataset}.yaml"
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.losses:
            for seed in args.seeds:
                out = Path(tmp) / f"{len(results)}-{seed}"
                argv_ = ["train", str(config), *LOSSES[name], f"train.seed={seed}",
                         f"train.output_dir={out}", "--no-progress"]
                if args.epochs:
                    argv_.append(f"train.epochs={args.epochs}")
                if args.data_dir:
                    argv_ += ["--data-dir", args.data_dir]
                if cli_main(argv_) != 0:
                    return 1
                m = json.loads((out / "metrics.json").read_text())
                results.setdefault(name, []).append((m["dev"]["default"]["f1"],
                                                     m["test"]["default"]["f1"]))

    def cell(values: list[float]) -> str:
        med = 100 * statistics.median(values)
        if len(values) == 1:
            return f"{med:.2f}"
        return f"{med:.2f} ({100 * min(values):.2f}-{100 * max(values):.2f})"

    base_test = statistics.median(t for _, t in results.get("ce", [(0, 0)]))
    print(f"\n{args.dataset}, seeds {args.seeds}, entity F1 (seqeval default mode)")
    print("| loss | dev F1 | test F1 | test - ce |\n|---|---:|---:|---:|")
    for name, runs in results.items():
        test_med = statistics.median(t for _, t in runs)
        print(f"| {name} | {cell([d for d, _ in runs])} | {cell([t for _, t in runs])} | "
              f"{100 * (test_med - base_test):+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
