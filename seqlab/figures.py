"""Figures: pyplot without a display, and figures saved so that an unchanged one stays
byte-identical (a leaf module: the report, the study and the benchmarks draw through it)."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """pyplot without a display, writing SVGs whose element ids do not change between runs (so
    a regenerated figure shows in a diff only where it changed)."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "seqlab"
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt, fig, stem: Path) -> list[Path]:
    """``stem.png`` and ``stem.svg`` (without a date, so unchanged figures stay unchanged)."""
    written = []
    for ext in ("png", "svg"):
        path = stem.with_name(f"{stem.name}.{ext}")
        fig.savefig(path, dpi=120, bbox_inches="tight",
                    metadata={"Date": None} if ext == "svg" else None)
        written.append(path)
    plt.close(fig)
    return written
