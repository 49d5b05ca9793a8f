"""The studies side by side (``seqlab study-summary``): each variant's difference to its grid's
baseline in every grid, with the verdict its statistics allow, and a figure."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError, SeqlabError
from ..files import write_text
from ..figures import pyplot, save_figure
from .report import delta_axes, headline_table, signed


def read_results(directory: str | Path) -> list[dict]:
    """The ``results.json`` of every study one level under ``directory`` (``benchmarks/study``),
    in name order.

    Raises:
        SeqlabError: no study there.
        DataError: a results file that is not one (the message names the file).
    """
    directory = Path(directory)
    paths = sorted(directory.glob("*/results.json"))
    if not paths:
        raise SeqlabError(f"{directory}: no */results.json; expected the directory holding the "
                          "studies' output directories (`seqlab study CONFIG --report` writes them)")
    out = []
    for path in paths:
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"not JSON: {exc}", str(path)) from None
        if not isinstance(results, dict) or not {"study", "baseline", "losses",
                                                  "scored_split"} <= set(results):
            raise DataError("expected the results of `seqlab study --report` (keys study, "
                            "baseline, losses, scored_split; rerun the report)", str(path))
        out.append(results)
    return out


def grid_state(results: dict) -> str:
    done, planned = results["finished_runs"], results["planned_runs"]
    return "" if done == planned else f", {done} of {planned} runs"


_MARK = {"better": "**", "worse": "**", "no detectable difference": "≈", "inconclusive": ""}


def cell(results: dict, name: str) -> tuple[str, float | None]:
    """The summary's cell of a variant in one study, and its Δ (None where it has none)."""
    e = results["losses"].get(name)
    scored = results["scored_split"]
    if e is None or scored not in e:
        return "-", None
    if name == results["baseline"]:
        f1 = e[scored]["f1"]
        sd = "" if f1["std"] is None else f" ± {100 * f1['std']:.2f}"
        return f"{100 * f1['mean']:.2f}{sd} (F1)", None
    v = e.get("vs_baseline", {})
    t = v.get(f"{scored}_f1")
    if not t or t.get("mean_diff") is None:
        return "n/a", None
    text = signed(t["mean_diff"])
    mark = _MARK.get(v.get("verdict", "inconclusive"), "")
    text = f"**{text}**" if mark == "**" else (f"{text} ≈" if mark == "≈" else text)
    return f"{text} ({t['wins']}/{t['pairs']})", t["mean_diff"]


def families(studies: list[dict]) -> list[tuple[str, list[dict]]]:
    """The studies grouped by baseline variant, in order of first appearance: the loss grids
    (baseline ``ce``) apart from the heads grids (baseline ``softmax-ce``)."""
    groups: dict[str, list[dict]] = {}
    for r in studies:
        groups.setdefault(r["baseline"], []).append(r)
    return list(groups.items())


def variant_order(studies: list[dict]) -> list[str]:
    """Every variant of ``studies`` once, in the order of the grid that has the most of them
    (the fullest grid's config order), then any others in order of first appearance."""
    fullest = sorted(studies, key=lambda r: -len(r["losses"]))
    return list(dict.fromkeys(n for r in fullest for n in r["losses"]))


def _seeds(results: dict) -> int:
    return max((len(e.get("seeds", [])) for e in results["losses"].values()), default=0)


def grid_sets(studies: list[dict], names: list[str]) -> list[tuple[str, ...]]:
    """The sets of grids a mean Δ is taken over, largest first: for each variant, the complete
    grids of more than one seed it ran on (a grid of one seed has no interval to weigh), where
    that is more than one grid. A mean is then only ever over exactly one of these sets."""
    usable = [r for r in studies if not grid_state(r) and _seeds(r) > 1]
    sets = []
    for name in names:
        have = tuple(r["study"] for r in usable if cell(r, name)[1] is not None)
        if len(have) > 1 and have not in sets:
            sets.append(have)
    sets.sort(key=lambda s: (-len(s), s))
    return sets


def mean_deltas(studies: list[dict], grids: tuple[str, ...]) -> list[tuple[str, float]]:
    """(variant, mean Δ over ``grids``) for every variant with a Δ on each of them, highest
    first."""
    chosen = [r for r in studies if r["study"] in grids]
    out = []
    for name in dict.fromkeys(n for r in chosen for n in r["losses"]):
        ds = [cell(r, name)[1] for r in chosen]
        if all(d is not None for d in ds):
            out.append((name, sum(ds) / len(ds)))
    return sorted(out, key=lambda t: -t[1])


def summary_markdown(studies: list[dict]) -> str:
    """The grids side by side, a table for each baseline: Δ to each grid's baseline and the
    verdict; then the means by grid set, then each grid's headline table."""
    lines = ["# Studies: summary", "",
             "Written by `seqlab study-summary` from the `results.json` beside it. F1 on each "
             "grid's scored split (test for NER, dev for QA), in percent; for each variant the "
             "mean paired difference to the grid's baseline over seeds, in points, and in how "
             "many seeds it scored higher. **Bold**: better or worse, both the two-level "
             "bootstrap's p (seeds and documents, or sentences where the data marks none) and "
             "the paired t-test's over seeds below 0.05 "
             "after Holm's adjustment across the grid's variants; ≈: no detectable difference "
             "(equivalence within ±0.5 points, both tests' TOST, adjusted); plain: "
             "inconclusive. A grid still running says how many of its runs "
             "have finished; its figures are over those.", ""]
    for baseline, group in families(studies):
        names = variant_order(group)
        lines += [f"## Grids with baseline `{baseline}`", "",
                  "| variant | " + " | ".join(f"{r['study']}{grid_state(r)}" for r in group)
                  + " |", "|---|" + "---:|" * len(group)]
        lines += [f"| {name} | " + " | ".join(cell(r, name)[0] for r in group) + " |"
                  for name in names]
        lines.append("")
    lines += ["![difference in F1 to the baseline](summary_delta_f1.png)", ""]
    rows = []
    for baseline, group in families(studies):
        names = variant_order(group)
        for s in grid_sets(group, names):
            ranked = " · ".join(f"{n} {signed(d)}" for n, d in mean_deltas(group, s))
            rows.append(f"| {', '.join(s)} | {ranked} |")
    if rows:
        lines += ["## Mean Δ by set of grids", "",
                  "Each row: the variants that ran on every grid of the set, by their mean Δ "
                  "over those grids, highest first. Only complete grids of more than one seed "
                  "count. The grids differ in size and difficulty: read a row as a ranking, not "
                  "an effect size, and the verdicts above as what the statistics support.", "",
                  "| grids | mean Δ F1 (points), highest first |", "|---|---|"] + rows + [""]
    for r in studies:
        lines += [f"## {r['study']}{grid_state(r)}", "",
                  f"Config `{r['config']}`, baseline `{r['baseline']}`, scored on "
                  f"{r['scored_split']}; every figure is in [its report]({r['study']}/report.md).",
                  ""]
        lines += headline_table(r) + [""]
    return "\n".join(lines)


def summary_figure(studies: list[dict], directory: Path) -> list[Path]:
    """Difference in F1 to the baseline, a row per variant and a colour per study. PNG and SVG."""
    plt = pyplot()
    names = [n for n in variant_order(studies)
             if any(r["losses"].get(n, {}).get("vs_baseline") for r in studies)]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.55 * max(1, len(names))))
    delta_axes(ax, studies, names)
    ax.set_title("Δ F1 to the baseline, paired by seed\n(point: mean over seeds; bar: bootstrap "
                 "95% interval over seeds and documents or sentences; dots: seeds)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return save_figure(plt, fig, directory / "summary_delta_f1")


def write_summary(directory: str | Path) -> list[dict]:
    """``summary.md`` and ``summary_delta_f1.{png,svg}`` in ``directory`` from the studies under it."""
    directory = Path(directory)
    studies = read_results(directory)
    write_text(directory / "summary.md", summary_markdown(studies))
    summary_figure(studies, directory)
    return studies
