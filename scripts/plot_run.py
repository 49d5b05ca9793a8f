"""Draw a run's training loss and dev entity F1 (from its metrics.jsonl) as an SVG, no plotting
library needed.

    python scripts/plot_run.py runs/conll2003-ce docs/conll2003-ce.svg
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

W, H, PAD = 640, 300, 48


def _poly(points, xmax, ymin, ymax, colour):
    def sx(x):
        return PAD + (W - 2 * PAD) * x / xmax

    def sy(y):
        return H - PAD - (H - 2 * PAD) * (y - ymin) / ((ymax - ymin) or 1)

    pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>'
                   for x, y in points) if len(points) < 20 else ""
    return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>{dots}'


def main(argv=None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    run, out = Path(argv[0]), Path(argv[1])
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    loss = [(r["step"], r["loss"]) for r in recs if r["event"] == "train"]
    f1 = [(r["step"], r["f1"]) for r in recs if r["event"] == "eval" and "f1" in r]
    final = {r["split"]: r["f1"] for r in recs if r["event"] == "final"}
    xmax = max(s for s, _ in loss)
    lmax = max(l for _, l in loss)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#888"/>',
           f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#888"/>',
           _poly(loss, xmax, 0, lmax, "#c0392b"),
           _poly(f1, xmax, 0.8, 1.0, "#2471a3"),
           f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle">optimizer step</text>',
           f'<text x="{PAD}" y="{PAD - 24}" fill="#c0392b">training loss (0 to {lmax:.2f})</text>',
           f'<text x="{W - PAD}" y="{PAD - 24}" fill="#2471a3" text-anchor="end">dev entity F1 '
           f'(0.80 to 1.00)</text>']
    label = ", ".join(f"{k} F1 {100 * v:.2f}" for k, v in final.items())
    svg.append(f'<text x="{W / 2}" y="{PAD - 8}" text-anchor="middle" font-weight="bold">'
               f'{run.name}: {label}</text></svg>')
    out.write_text("\n".join(svg) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
