"""Plot a run's training loss and dev entity F1 (from its metrics.jsonl) with matplotlib.

    python scripts/plot_run.py runs/conll2003-ce docs/conll2003-ce.svg   # .svg or .png

The figure is drawn from the run's own log, so it can be redrawn from the files beside it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run, out = Path(argv[0]), Path(argv[1])
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    loss = [(r["step"], r["loss"]) for r in recs if r["event"] == "train" and r.get("loss") is not None]
    f1 = [(r["step"], 100 * r["f1"]) for r in recs if r["event"] == "eval" and "f1" in r]
    final = {r["split"]: 100 * r["f1"] for r in recs if r["event"] == "final"}
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot(*zip(*loss), color="C3", lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss", color="C3")
    if f1:
        ax2 = ax.twinx()
        ax2.plot(*zip(*f1), "o-", color="C0")
        ax2.set_ylabel("dev entity F1 (%)", color="C0")
    label = ", ".join(f"{k} F1 {v:.2f}" for k, v in final.items())
    ax.set_title(f"{run.name}: {label}")
    ax.grid(alpha=0.3)
    fig.savefig(out, dpi=120, bbox_inches="tight",
                metadata={"Date": None} if out.suffix == ".svg" else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
