"""A study's report: the finished runs read through their task, the statistics of
:mod:`seqlab.study.stats`, ``results.json``, ``report.md`` and figures.

Nothing here trains: the report is recomputed from the committed run directories (their
``metrics.json`` and gzipped predictions) and, for CoNLL data, the test documents, read once
from the data and kept beside the report (``documents_<split>.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import SeqlabError
from ..figures import pyplot, save_figure
from ..files import write_json, write_text
from . import stats
from .grid import Study, check_finished_runs


def _task(study: Study):
    from ..tasks import get_task

    return get_task(str(study.base.get("task", "ner")))


def same_start(a: dict, b: dict) -> bool:
    """Whether two runs of a seed saw the same data order from the same initial encoder, as
    their fingerprints (``metrics.json``) say: a pair is compared only then. Runs of different
    heads share the encoder's initial weights, not the head's; runs written before fingerprints
    were recorded have none and are taken as paired."""
    if a.get("data_order") != b.get("data_order"):
        return False
    if a.get("initial_encoder_weights") and b.get("initial_encoder_weights"):
        return a["initial_encoder_weights"] == b["initial_encoder_weights"]
    return a.get("initial_weights") == b.get("initial_weights")


def _documents(study: Study, task, split: str, config: dict) -> list | None:
    """Each unit's document in ``split``: from ``documents_<split>.json`` beside the report,
    else from the data (then written there), else None (each unit its own)."""
    from ..assemble import config_from_dict

    path = study.output_dir / f"documents_{split}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    try:
        docs = task.study_documents(config_from_dict(config), split)
    except SeqlabError:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, docs, indent=None)
    return docs


def _calibration(units) -> dict:
    if units is None or units.confidence is None:
        return {}
    conf, ok, ent = units.confidence, units.correct, units.in_entity
    return {"ece_all": stats.expected_calibration_error(conf, ok),
            "ece_entity": stats.expected_calibration_error(
                [c for c, e in zip(conf, ent) if e], [o for o, e in zip(ok, ent) if e])}


def _own_seeds(results: dict) -> str:
    own = results.get("variant_seeds") or {}
    return "".join(f", {name} {seeds}" for name, seeds in own.items())


def aggregate(study: Study, *, resamples: int = stats.RESAMPLES, seed: int = stats.BOOTSTRAP_SEED,
              margin: float = stats.MARGIN) -> dict:
    """Everything ``results.json`` holds, from the finished runs."""
    check_finished_runs(study)
    task = _task(study)
    scores = task.study_scores()
    runs = [r for r in study.runs() if r.finished()]
    metrics = {r.name: json.loads((r.directory / "metrics.json").read_text(encoding="utf-8"))
               for r in runs}
    scored = "test" if any("test" in m for m in metrics.values()) else "dev"
    records: dict[str, list[dict]] = {}
    units: dict[tuple[str, int], object] = {}
    for run in runs:
        m = metrics[run.name]
        rec = {"seed": run.seed, **{k: m.get(k) for k in (
            "data_order", "initial_weights", "initial_encoder_weights", "train_time_s",
            "train_tokens_per_s", "best_epoch", "epochs_run", "stopped_early_at_epoch")}}
        for split in ("dev", "test"):
            if split in m:
                rec[split] = task.study_metrics(m[split])
        u = task.study_split(run.directory, scored)
        units[(run.loss, run.seed)] = u
        rec.update(_calibration(u))
        records.setdefault(run.loss, []).append(rec)
        for name, d in study.derived.items():
            if d["from"] != run.loss:
                continue
            du = task.study_split(run.directory, scored, d["decoding"])
            drec = {k: v for k, v in rec.items() if k not in ("dev", "test")}
            if du is not None:
                sums = du.counts.sum(0)
                drec[scored] = {k: float(fn(sums)) for k, fn in scores.items()}
                if du.per_type is not None:
                    drec[scored].update(per_type=du.per_type["f1"], support=du.per_type["support"])
            dev_dec = rec.get("dev", {}).get("decodings", {}).get(d["decoding"])
            if dev_dec is not None:
                drec["dev"] = {"f1": dev_dec}
            drec.update(_calibration(du))
            units[(name, run.seed)] = du
            records.setdefault(name, []).append(drec)

    config = study.runs()[0].config if study.runs() else {}
    docs = None
    any_units = next((u for u in units.values() if u is not None), None)
    if any_units is not None:
        docs = any_units.documents if any_units.documents is not None else \
            _documents(study, task, scored, config)
    out = {"study": study.name, "config": str(study.path), "task": task.name,
           "baseline": study.baseline, "seeds": study.seeds,
           "variant_seeds": dict(study.variant_seeds), "planned_runs": len(study.runs()),
           "finished_runs": len(runs), "scored_split": scored,
           "bootstrap": {"resamples": resamples, "seed": seed, "margin": margin,
                         "units": "documents" if docs is not None else task.unit_name,
                         "documents": len(set(map(str, docs))) if docs is not None else None},
           "losses": {}}
    if scored == "dev":
        # the kept epoch is chosen on dev: where dev is also the scored split, say where that
        # choice selected anything (an earlier epoch than the last was kept)
        trained = [(n, r) for n, rs in records.items() if n not in study.derived for r in rs
                   if r.get("best_epoch") is not None]
        out["epoch_chosen_on_scored_split"] = {
            "runs": len(trained),
            "kept_an_earlier_epoch": [{"variant": n, "seed": r["seed"], "best_epoch": r["best_epoch"],
                                       "epochs_run": r["epochs_run"]}
                                      for n, r in trained if r["best_epoch"] != r["epochs_run"]]}
    base_recs = records.get(study.baseline, [])
    rare = None
    if base_recs and base_recs[0].get(scored, {}).get("support"):
        support = base_recs[0][scored]["support"]
        rare = min(support, key=lambda k: (support[k], k))
    out["rarest_type"] = rare
    for name in study.variants():
        if name not in records:
            continue
        rs = records[name]
        entry = {"seeds": [r["seed"] for r in rs], "runs": rs}
        for split in ("dev", "test"):
            have = [r for r in rs if split in r]
            if not have:
                continue
            keys = [k for k, v in have[0][split].items() if isinstance(v, (int, float))]
            sec = {k: stats.summary([r[split].get(k) for r in have]) for k in keys}
            if "per_type" in have[0][split]:
                types = sorted({t for r in have for t in r[split]["per_type"]})
                sec["per_type_f1"] = {t: stats.summary([r[split]["per_type"].get(t, 0.0)
                                                        for r in have]) for t in types}
            entry[split] = sec
        for key in ("ece_all", "ece_entity", "train_time_s", "train_tokens_per_s", "epochs_run"):
            vals = [r.get(key) for r in rs if r.get(key) is not None]
            if vals:
                entry[key] = stats.summary(vals)
        if name != study.baseline and study.baseline in records:
            entry["vs_baseline"] = _compare(rs, records[study.baseline], name, study.baseline,
                                            units, scores, docs, scored, rare,
                                            resamples=resamples, seed=seed, margin=margin)
        out["losses"][name] = entry
    _adjust(out)
    return out


def _compare(rs, base_rs, name, baseline, units, scores, docs, scored, rare, *, resamples, seed,
             margin) -> dict:
    base = {r["seed"]: r for r in base_rs}
    paired, unpaired = [], []
    for r in rs:
        if r["seed"] not in base:
            continue
        (paired if same_start(r, base[r["seed"]]) else unpaired).append((r, base[r["seed"]]))
    cmp_: dict = {"unpaired_seeds": [a["seed"] for a, _ in unpaired], "scored_split": scored}
    for split in ("dev", "test"):
        pairs = [(a, b) for a, b in paired if split in a and split in b]
        for key in scores:
            if pairs and key in pairs[0][0][split] and key in pairs[0][1][split]:
                cmp_[f"{split}_{key}"] = stats.paired_tests(
                    [a[split][key] for a, _ in pairs], [b[split][key] for _, b in pairs],
                    margin=margin if key == "f1" else None)
        if rare and split == scored and pairs and "per_type" in pairs[0][0][split]:
            cmp_["rare_f1"] = stats.paired_tests(
                [a[split]["per_type"].get(rare, 0.0) for a, _ in pairs],
                [b[split]["per_type"].get(rare, 0.0) for _, b in pairs])
    for key in ("ece_all", "ece_entity"):
        pairs = [(a, b) for a, b in paired if a.get(key) is not None and b.get(key) is not None]
        if pairs:
            cmp_[key] = stats.paired_tests([a[key] for a, _ in pairs], [b[key] for _, b in pairs])
    seeds = [a["seed"] for a, _ in paired if units.get((name, a["seed"])) is not None
             and units.get((baseline, a["seed"])) is not None]
    if seeds:
        a = np.stack([units[(name, s)].counts for s in seeds])
        b = np.stack([units[(baseline, s)].counts for s in seeds])
        cmp_["bootstrap"] = {key: {**stats.two_level_bootstrap(a, b, fn, documents=docs,
                                                               resamples=resamples, seed=seed,
                                                               margin=margin),
                                   "seed_list": seeds}
                             for key, fn in scores.items()}
    return cmp_


def _adjust(results: dict) -> None:
    """Holm's adjustment across the variants of the grid, for each family of p-values; the
    verdict on the primary score."""
    entries = [e["vs_baseline"] for e in results["losses"].values() if "vs_baseline" in e]
    scored = results["scored_split"]
    families: list[tuple[list, str]] = []
    boot_keys = {k for c in entries for k in c.get("bootstrap", {})}
    for key in sorted(boot_keys):
        have = [c["bootstrap"][key] for c in entries if key in c.get("bootstrap", {})]
        families += [(have, "p_value"), (have, "tost_p")]
    for key in [k for c in entries for k in c if k.startswith(f"{scored}_")]:
        have = [c[key] for c in entries if key in c]
        families.append((have, "t_test_p"))
        if any("t_tost_p" in m for m in have):
            families.append((have, "t_tost_p"))
    for key in ("ece_all", "ece_entity", "rare_f1"):
        families.append(([c[key] for c in entries if key in c], "t_test_p"))
    for members, field in families:
        if any(f"{field}_holm" in m for m in members):
            continue
        adjusted = stats.holm([m.get(field) for m in members])
        for m, p in zip(members, adjusted):
            m[f"{field}_holm"] = p
    for c in entries:
        b = c.get("bootstrap", {}).get("f1")
        if b:
            t = c.get(f"{scored}_f1", {})
            c["verdict"] = stats.verdict(b, b["p_value_holm"], b["tost_p_holm"],
                                         seed_p=t.get("t_test_p_holm"),
                                         seed_tost=t.get("t_tost_p_holm"), seeds=t.get("pairs"))


# --------------------------------------------------------------------------- Markdown


def pct(x, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}"


def signed(x, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:+.{digits}f}"


def mean_sd(summary: dict | None, digits: int = 2) -> str:
    """``mean ± sd`` in percent (the mean alone for one value)."""
    if not summary or summary.get("mean") is None:
        return "n/a"
    sd = summary["std"]
    return pct(summary["mean"], digits) + ("" if sd is None else f" ± {pct(sd, digits)}")


def pval(x) -> str:
    if x is None:
        return "n/a"
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def interval(b: dict) -> str:
    return f"{signed(b['diff'])} [{signed(b['ci_low'])}, {signed(b['ci_high'])}]"


def wilcoxon_cell(t: dict) -> str:
    if t.get("wilcoxon_p") is not None:
        return pval(t["wilcoxon_p"])
    return f"n<6 (min {t['wilcoxon_min_p']:.3g})" if t.get("pairs") else "n/a"


def wins_cell(t: dict) -> str:
    if not t or not t.get("pairs"):
        return "n/a"
    return f"{t['wins']}/{t['pairs']} (sign p {pval(t['sign_test_p'])})"


def headline_table(results: dict) -> list[str]:
    """One study in one table: the primary score and the paired comparison with the baseline,
    a row per variant (percent); every p Holm-adjusted across the grid's variants."""
    scored = results["scored_split"]
    lines = [f"| variant | seeds | {scored} F1 | Δ F1 | wins | t-test p (Holm) | Wilcoxon p | "
             "bootstrap Δ [95% CI] | bootstrap p (Holm) | TOST p (Holm): bootstrap / seeds | "
             "verdict |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for name, e in results["losses"].items():
        sec = e.get(scored)
        if not sec:
            continue
        v = e.get("vs_baseline")
        if v and f"{scored}_f1" in v:
            t = v[f"{scored}_f1"]
            b = v.get("bootstrap", {}).get("f1")
            cells = [signed(t["mean_diff"]), wins_cell(t), pval(t.get("t_test_p_holm")),
                     wilcoxon_cell(t), interval(b) if b else "n/a",
                     pval(b["p_value_holm"]) if b else "n/a",
                     (f"{pval(b['tost_p_holm'])} / {pval(t.get('t_tost_p_holm'))}" if b
                      else "n/a"), v.get("verdict", "n/a")]
        else:
            cells = ["baseline" if name == results["baseline"] else ""] + [""] * 7
        lines.append(f"| {name} | {len(e['seeds'])} | {mean_sd(sec.get('f1'))} | "
                     + " | ".join(cells) + " |")
    return lines


def markdown(results: dict) -> str:
    """The per-grid report."""
    base, scored = results["baseline"], results["scored_split"]
    losses = results["losses"]
    bs = results["bootstrap"]
    margin = pct(bs["margin"], 1)
    units = (f"{bs['documents']} documents" if bs["units"] == "documents" else
             f"{bs['units']} (the data marks no documents)")
    named = {"f1": f"{scored} F1", "exact_match": "exact match", "f1_strict": "strict F1",
             "precision": "precision", "recall": "recall", "dev_f1": "dev F1"}
    columns = [k for k in named if any(k in e.get(scored, {}) for e in losses.values())]
    if scored != "dev":
        columns.append("dev_f1")   # what the kept epoch was chosen on
    entity = "f1_strict" in columns
    lines = [f"# Study: {results['study']}", "",
             f"Config `{results['config']}`; task {results['task']}; seeds {results['seeds']}"
             f"{_own_seeds(results)}; "
             f"baseline `{base}`; {results['finished_runs']} of {results['planned_runs']} runs "
             f"finished. Scores on the {scored} split, in percent"
             + (" (entity scores: seqeval's default mode, or exact-match spans for span heads, "
                "which equal it on flat data)" if entity else "")
             + "; mean ± standard deviation over seeds.", "",
             "How to read the comparisons: Δ is the mean over paired seeds of the variant's "
             f"score minus `{base}`'s. The bootstrap resamples seeds and, with one shared draw, "
             f"the {units} ({bs['resamples']:,} resamples, random seed {bs['seed']}): its 95% "
             "interval and two-sided p. Every p is adjusted with Holm's method across the "
             "variants of this grid (the unadjusted ones are in results.json). The verdict: "
             "better or worse where the adjusted bootstrap p and the adjusted paired t-test "
             "over seeds are both < 0.05; \"no detectable difference\" where the adjusted "
             f"equivalence tests (TOST, margin ±{margin} points), the bootstrap's and the "
             "seed-level t-test's, are both < 0.05; otherwise inconclusive; no verdict from one "
             "paired seed, whose interval holds no seed-to-seed variation. The bootstrap alone "
             "is not enough: with a handful of seeds its seed level is too narrow where the "
             "seed moves F1 by several points (scripts/study_coverage.py). Wins: the seeds where the variant "
             "scored higher, with the sign test's p; the Wilcoxon test is given from 6 pairs "
             "(below, the smallest p it could reach).", ""]
    chosen = results.get("epoch_chosen_on_scored_split")
    if chosen:
        earlier = chosen["kept_an_earlier_epoch"]
        lines += ["Each run keeps its best epoch on dev, the split scored here: "
                  + (f"in all {chosen['runs']} runs that was the last epoch, so the choice "
                     "selected nothing." if not earlier else
                     f"{len(earlier)} of {chosen['runs']} runs kept an earlier epoch than their "
                     "last (" + ", ".join(f"`{e['variant']}` seed {e['seed']}: epoch "
                                          f"{e['best_epoch']} of {e['epochs_run']}"
                                          for e in earlier)
                     + "); their scores are optimistic by that choice."), ""]
    lines += ["## Scores", "",
              "| variant | seeds | " + " | ".join(named[c] for c in columns)
              + " | epochs run |", "|---|---:|" + "---:|" * len(columns) + "---:|"]
    for name, e in losses.items():
        sec = e.get(scored, {})
        cells = [mean_sd(e.get("dev", {}).get("f1") if c == "dev_f1" else sec.get(c))
                 for c in columns]
        ep = e.get("epochs_run")
        epochs = (f"{ep['median']:.0f} ({min(ep['values']):.0f}-{max(ep['values']):.0f})"
                  if ep else "n/a")
        lines.append(f"| {name} | {len(e['seeds'])} | " + " | ".join(cells) + f" | {epochs} |")
    lines += ["", f"## Against `{base}`", ""] + headline_table(results)
    extra = [k for k in ("precision", "recall", "exact_match")
             if any(k in e.get("vs_baseline", {}).get("bootstrap", {}) for e in losses.values())]
    if extra:
        lines += ["", "Other scores, bootstrapped alike (Δ [95% CI], p Holm-adjusted):", "",
                  "| variant | " + " | ".join(extra) + " |", "|---|" + "---|" * len(extra)]
        for name, e in losses.items():
            b = e.get("vs_baseline", {}).get("bootstrap", {})
            if b:
                lines.append(f"| {name} | " + " | ".join(
                    f"{interval(b[k])}, p {pval(b[k]['p_value_holm'])}" for k in extra) + " |")
    unpaired = {n: e["vs_baseline"]["unpaired_seeds"] for n, e in losses.items()
                if e.get("vs_baseline", {}).get("unpaired_seeds")}
    if unpaired:
        lines += ["", "Left out of the paired comparison, because their data order or initial "
                  f"encoder differ from `{base}`'s run of the same seed (rerun them): " +
                  "; ".join(f"`{n}` seeds {v}" for n, v in unpaired.items()) + "."]
    rare = results.get("rarest_type")
    if rare:
        types = sorted({t for e in losses.values() for t in e.get(scored, {}).get("per_type_f1", {})})
        lines += ["", f"## Per-type {scored} F1 (rarest type: `{rare}`)", "",
                  "| variant | " + " | ".join(types) + f" | Δ {rare} (t-test p, Holm) |",
                  "|---|" + "---:|" * (len(types) + 1)]
        for name, e in losses.items():
            pt = e.get(scored, {}).get("per_type_f1", {})
            d = e.get("vs_baseline", {}).get("rare_f1")
            cells = [pct(pt[t]["mean"]) if t in pt else "n/a" for t in types]
            cells.append(f"{signed(d['mean_diff'])} ({pval(d.get('t_test_p_holm'))})" if d else "")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if any("ece_all" in e for e in losses.values()):
        lines += ["", "## Calibration", "",
                  f"Token-level expected calibration error ({stats.ECE_BINS} bins) of the "
                  f"predicted label's probability on {scored}, over all tokens and over the tokens "
                  "whose gold or predicted tag is not `O` (lower is better); Δ: paired, with "
                  "the t-test's p (Holm).", "",
                  "| variant | ECE all | Δ ECE all | ECE entity | Δ ECE entity |",
                  "|---|---:|---:|---:|---:|"]
        for name, e in losses.items():
            v = e.get("vs_baseline", {})
            cells = []
            for key in ("ece_all", "ece_entity"):
                cells.append(mean_sd(e.get(key), 1))
                d = v.get(key)
                cells.append(f"{signed(d['mean_diff'], 1)} ({pval(d.get('t_test_p_holm'))})"
                             if d else "")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Cost", "",
              "Training time (the epochs only, evaluation excluded) and real (non-padding) "
              "training tokens per second, the median over seeds and the range, as measured: "
              "they depend on what else the machine was doing.", "",
              "| variant | train time (s) | tokens/s |", "|---|---:|---:|"]

    def spread(s: dict | None) -> str:
        return f"{s['median']:.0f} ({min(s['values']):.0f}-{max(s['values']):.0f})" if s else "-"

    for name, e in losses.items():
        lines.append(f"| {name} | {spread(e.get('train_time_s'))} | "
                     f"{spread(e.get('train_tokens_per_s'))} |")
    lines += ["", "![F1 by variant](f1_by_loss.png)", "",
              "![difference to the baseline, with intervals](delta_f1.png)", ""]
    if rare:
        lines += ["![precision against recall](precision_recall.png)", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures


def delta_axes(ax, studies: list[dict], names: list[str]) -> None:
    """Δ F1 to the baseline on ``ax``: a row per variant, a colour per study; the bootstrap's
    95% interval as a bar, the mean as a point, a dot per seed; linear within ±5 points."""
    import matplotlib.ticker

    height = 0.7 / max(1, len(studies))
    for j, r in enumerate(studies):
        labelled = False
        scored = r.get("scored_split", "test")
        for i, name in enumerate(names):
            v = r["losses"].get(name, {}).get("vs_baseline")
            t = (v or {}).get(f"{scored}_f1")
            if not t or t.get("mean_diff") is None:
                continue
            y = i - 0.35 + height * (j + 0.5)
            b = v.get("bootstrap", {}).get("f1")
            d = t["mean_diff"]
            err = ([[100 * max(0.0, d - b["ci_low"])], [100 * max(0.0, b["ci_high"] - d)]]
                   if b else None)
            ax.errorbar(100 * d, y, xerr=err, fmt="o", capsize=3, color=f"C{j % 10}",
                        label=None if labelled else r["study"])
            labelled = True
            ax.scatter([100 * x for x in t["diffs"]], [y] * len(t["diffs"]), s=8,
                       color=f"C{j % 10}", alpha=0.4, zorder=3)
    ax.axvline(0, color="grey", lw=1)
    ax.set_xscale("symlog", linthresh=5, linscale=1)
    low, high = ax.get_xlim()
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(
        [x for x in (-80, -40, -20, -10, -5, -2, 0, 2, 5, 10, 20, 40, 80) if low <= x <= high]))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:+g}" if x else "0"))
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("F1 minus the baseline's (points; linear within ±5, log beyond)")
    ax.grid(axis="x", alpha=0.3)


def figures(results: dict, directory: Path) -> list[Path]:
    """F1 by variant (mean ± sd, seeds as dots), Δ F1 with the bootstrap intervals, and
    precision against recall; PNG and SVG each."""
    plt = pyplot()
    scored = results["scored_split"]
    losses = {k: v for k, v in results["losses"].items() if scored in v}
    names = list(losses)
    written = []
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, n in enumerate(names):
        s = losses[n][scored]["f1"]
        ax.errorbar(i, 100 * s["mean"], yerr=100 * (s["std"] or 0), fmt="o", capsize=4,
                    color="C3" if n == results["baseline"] else "C0")
        ax.scatter([i] * len(s["values"]), [100 * v for v in s["values"]], s=10, color="grey",
                   alpha=0.6, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel(f"{scored} F1 (%)")
    ax.set_title(f"{results['study']}: {scored} F1 (mean ± sd, dots: seeds)")
    ax.grid(axis="y", alpha=0.3)
    written += save_figure(plt, fig, directory / "f1_by_loss")

    compared = [n for n in names if losses[n].get("vs_baseline")]
    if compared:
        fig, ax = plt.subplots(figsize=(7, 0.6 + 0.45 * len(compared)))
        delta_axes(ax, [results], compared)
        units = results["bootstrap"]["units"]
        ax.set_title(f"{results['study']}: Δ {scored} F1 to {results['baseline']}\n(point: mean "
                     f"over seeds; bar: bootstrap 95% interval over seeds and {units}; dots: "
                     "seeds)", fontsize=9)
        written += save_figure(plt, fig, directory / "delta_f1")

    if all("precision" in losses[n][scored] for n in names):
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        for i, n in enumerate(names):
            p, r = losses[n][scored]["precision"]["values"], losses[n][scored]["recall"]["values"]
            ax.scatter([100 * x for x in r], [100 * x for x in p], label=n, color=f"C{i % 10}",
                       marker="s" if n == results["baseline"] else "o")
        ax.set_xlabel(f"{scored} recall (%)")
        ax.set_ylabel(f"{scored} precision (%)")
        ax.set_title(f"{results['study']}: precision against recall, a point per seed")
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
        written += save_figure(plt, fig, directory / "precision_recall")
    return written


def report(study: Study, *, resamples: int = stats.RESAMPLES) -> dict:
    """Write ``results.json``, ``report.md`` and the figures into the study's output directory."""
    results = aggregate(study, resamples=resamples)
    study.output_dir.mkdir(parents=True, exist_ok=True)
    write_json(study.output_dir / "results.json", results, indent=1)
    write_text(study.output_dir / "report.md", markdown(results))
    if results["losses"]:
        figures(results, study.output_dir)
    return results
