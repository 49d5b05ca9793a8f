"""Seeded, paired loss studies: a grid of ordinary training runs, then statistics and figures.

A study config (``configs/study-*.yaml``) names one base training config, the losses to compare
and the seeds::

    study: {output_dir: benchmarks/study/wnut17, seeds: [1, 2, 3], baseline: ce}
    base:                       # an ordinary `seqlab train` config, without loss and output_dir
      task: ner
      data: {dataset: wnut17}
      train: {epochs: 3, batch_size: 16, learning_rate: 5.0e-5}
    losses:                     # run name -> the `loss:` section of that run
      ce: {name: ce}
      focal-g2: {name: focal, gamma: 2.0}

Every run of a seed uses the same seed for initialisation and data order, so a loss and the
baseline differ in the loss only and their scores can be compared in pairs. Runs go to
``OUTPUT_DIR/runs/<loss>/seed-<n>``; a run directory holding ``metrics.json`` is finished and
skipped, anything else is (re)done, so a grid can be completed over several sittings or split
across machines with ``--shard i/n``. Weights are not kept unless ``study.keep_weights``; the
test predictions (with each word's predicted-label probability) are kept, gzipped, for the
bootstrap and the calibration figures.

:func:`report` aggregates the finished runs into ``results.json``, ``report.md`` and figures.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path


from .config import apply_overrides, config_from_dict, read_yaml
from .errors import ConfigError, DataError, SeqlabError

SPLITS = ("dev", "test")
ECE_BINS = 15
BOOTSTRAP_RESAMPLES = 1000


@dataclass(frozen=True)
class Run:
    loss: str
    seed: int
    directory: Path
    config: dict  # the run's whole training config, validated

    @property
    def name(self) -> str:
        return f"{self.loss}/seed-{self.seed}"

    def finished(self) -> bool:
        return (self.directory / "metrics.json").is_file()


@dataclass
class Study:
    name: str
    path: Path
    output_dir: Path
    seeds: list[int]
    losses: dict[str, dict]
    baseline: str
    base: dict
    keep_weights: bool = False

    def runs(self) -> list[Run]:
        """Every run, seed by seed (so that a grid stopped half-way has whole paired seeds)."""
        out = []
        for seed in self.seeds:
            for loss, section in self.losses.items():
                directory = self.output_dir / "runs" / loss / f"seed-{seed}"
                raw = merge_sections(self.base, variant_config(section))
                train = dict(raw.get("train") or {})
                train.update(seed=seed, output_dir=str(directory), overwrite=True,
                             save_model=self.keep_weights)
                raw["train"] = train
                out.append(Run(loss, seed, directory, raw))
        return out


_VARIANT_KEYS = ("loss", "model", "train", "eval", "data", "qa")


def variant_config(section: dict) -> dict:
    """A grid entry as the part of a training config it changes: ``{name: focal, gamma: 1}`` is
    a ``loss:`` section; a mapping of config sections (``{loss: {...}, train: {...}}``) is used
    as it is, so a run may change the learning rate or the head beside the loss."""
    if any(k in _VARIANT_KEYS for k in section):
        return {k: dict(v) if isinstance(v, dict) else v for k, v in section.items()}
    return {"loss": dict(section)}


def merge_sections(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in, section by section (``over`` wins)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_sections(out[key], value)
        else:
            out[key] = value
    return out


_STUDY_KEYS = ("output_dir", "seeds", "baseline", "keep_weights", "name")


def load_study(path: str | Path, overrides: list[str] | None = None) -> Study:
    """Read and validate a study config; every run's training config is validated too.

    Raises:
        ConfigError: a missing section, an unknown key, or a run config that does not validate
            (the message names the loss).
    """
    path = Path(path)
    raw = apply_overrides(read_yaml(path, "study config"), overrides or [])
    for key in ("study", "base", "losses"):
        if not isinstance(raw.get(key), dict):
            raise ConfigError(f"{path}: expected a mapping under {key!r} (see seqlab/study.py)")
    unknown = sorted(set(raw) - {"study", "base", "losses"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; valid keys: study, base, losses")
    s = raw["study"]
    bad = sorted(set(s) - set(_STUDY_KEYS))
    if bad:
        raise ConfigError(f"{path}: unknown key study.{bad[0]}; valid keys: {', '.join(_STUDY_KEYS)}")
    if "output_dir" not in s:
        raise ConfigError(f"{path}: study.output_dir is missing")
    seeds = s.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) for x in seeds) \
            or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: study.seeds: expected a list of distinct integers, got {seeds!r}")
    for key in ("loss",):
        if key in raw["base"]:
            raise ConfigError(f"{path}: base.{key}: the losses come from the 'losses' section")
    baseline = str(s.get("baseline", "ce"))
    if baseline not in raw["losses"]:
        raise ConfigError(f"{path}: study.baseline {baseline!r} is not one of the losses: "
                          f"{', '.join(raw['losses'])}")
    study = Study(name=str(s.get("name", path.stem.removeprefix("study-"))), path=path,
                  output_dir=Path(s["output_dir"]), seeds=list(seeds), losses=dict(raw["losses"]),
                  baseline=baseline, base=dict(raw["base"]), keep_weights=bool(s.get("keep_weights")))
    for run in study.runs()[: len(study.losses)]:  # the seeds' configs differ in the seed only
        try:
            config_from_dict(run.config)
        except ConfigError as exc:
            raise ConfigError(f"{path}: loss {run.loss!r}: {exc}") from None
    return study


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``: the second of four shards (1-based)."""
    if text is None:
        return 1, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected i/n, e.g. 1/2") from None
    if not 1 <= i <= n:
        raise ConfigError(f"--shard {text!r}: expected 1 <= i <= n")
    return i, n


def shard(runs: list[Run], i: int, n: int) -> list[Run]:
    """The runs of shard ``i`` of ``n``: every n-th run from the i-th, so each shard gets a share
    of every seed."""
    return runs[i - 1:: n]


def _compress_predictions(directory: Path) -> None:
    """Keep the test predictions, gzipped (the bootstrap and calibration read them); the dev
    predictions' scores are in metrics.json."""
    (directory / "predictions_dev.conll").unlink(missing_ok=True)
    for f in directory.glob("predictions_*.conll"):
        with open(f, "rb") as src, gzip.open(f.with_name(f.name + ".gz"), "wb", compresslevel=9) as dst:
            shutil.copyfileobj(src, dst)
        f.unlink()


def run_one(run: Run, *, progress: bool = False, max_steps: int | None = None) -> dict:
    """Train one run of the grid (from scratch: a leftover ``.incomplete`` directory is replaced)."""
    from .train import train_config

    raw = run.config
    if max_steps is not None:
        raw = apply_overrides(raw, [f"train.max_steps={max_steps}"])
    cfg = config_from_dict(raw)
    result = train_config(cfg, progress=progress)
    _compress_predictions(Path(cfg.train.output_dir))
    return result


def run_grid(study: Study, *, shard_spec: str | None = None, progress: bool = True,
             runner=run_one) -> list[Run]:
    """Run every unfinished run of this shard, in order; return the runs that were trained."""
    from tqdm.auto import tqdm

    i, n = parse_shard(shard_spec)
    todo = [r for r in shard(study.runs(), i, n) if not r.finished()]
    done = []
    bar = tqdm(todo, desc=f"study {study.name}", unit="run", disable=not progress)
    for run in bar:
        bar.set_postfix_str(run.name)
        staging = run.directory.with_name(run.directory.name + ".incomplete")
        if staging.exists():
            shutil.rmtree(staging)
        if run.directory.exists():  # a directory without metrics.json is not a finished run
            shutil.rmtree(run.directory)
        runner(run)
        done.append(run)
    return done


def dry_run(study: Study, *, shard_spec: str | None = None, time_steps: int = 20,
            timer=None) -> str:
    """The runs of this shard with their state, and the time the unfinished ones should take,
    estimated from ``time_steps`` optimizer steps of the first one (in a temporary directory)."""
    import tempfile

    i, n = parse_shard(shard_spec)
    runs = shard(study.runs(), i, n)
    todo = [r for r in runs if not r.finished()]
    lines = [f"study {study.name}: {len(runs)} runs in shard {i}/{n}, {len(todo)} to do"]
    lines += [f"  {'done' if r.finished() else 'todo'}  {r.name}" for r in runs]
    if todo:
        per_run = (timer or _time_run)(todo[0], time_steps, tempfile.mkdtemp(prefix="seqlab-study-"))
        lines.append(f"estimated {per_run / 60:.1f} min a run, {len(todo) * per_run / 3600:.1f} h "
                     f"for the {len(todo)} to do (from {time_steps} steps of {todo[0].name})")
    return "\n".join(lines)


def _time_run(run: Run, steps: int, tmp: str) -> float:
    """Seconds a whole run should take: train ``steps`` steps in ``tmp``; scale the training time
    to the run's steps and the evaluation time to its number of evaluations."""
    raw = apply_overrides(run.config, [f"train.output_dir={tmp}/run"])
    probe = Run(run.loss, run.seed, Path(tmp) / "run", raw)
    t0 = time.perf_counter()
    result = run_one(probe, max_steps=steps)
    wall = time.perf_counter() - t0
    cfg = config_from_dict(raw)
    train_s = result["train_time_s"]
    evals_done = 1 + sum(1 for s in SPLITS if s in result)  # one dev per epoch reached, then final
    per_eval = max(0.0, wall - train_s) / evals_done
    steps_done = max(1, result["steps"])
    rows = len(_load_corpus_rows(cfg))
    total_steps = math.ceil(rows / cfg.train.batch_size / cfg.train.gradient_accumulation_steps) \
        * cfg.train.epochs
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    evals = math.ceil(cfg.train.epochs) + len(SPLITS)
    shutil.rmtree(tmp, ignore_errors=True)
    return train_s / steps_done * total_steps + per_eval * evals


def _load_corpus_rows(cfg):
    from .tasks.ner import load_corpus

    return load_corpus(cfg).splits["train"]


# --------------------------------------------------------------------------- reading runs


def read_predictions(path: Path) -> tuple[list[list[str]], list[list[str]], list[list[float]]]:
    """Gold tags, predicted tags (the scored columns) and predicted-label probabilities of a
    predictions file written by training (``.conll`` or ``.conll.gz``)."""
    opener = gzip.open if path.suffix == ".gz" else open
    gold, pred, prob = [], [], []
    g, p, q = [], [], []
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            cols = line.split()
            if not cols:
                if g:
                    gold.append(g), pred.append(p), prob.append(q)
                g, p, q = [], [], []
                continue
            if len(cols) not in (4, 6):
                raise DataError(f"expected 4 or 6 columns (token, gold, pred[, gold, pred in the "
                                f"model's scheme], probability), found {len(cols)}", str(path), lineno)
            g.append(cols[-3]), p.append(cols[-2]), q.append(float(cols[-1]))
    if g:
        gold.append(g), pred.append(p), prob.append(q)
    return gold, pred, prob


def expected_calibration_error(confidence, correct, bins: int = ECE_BINS) -> float | None:
    r"""Expected calibration error with ``bins`` equal-width bins:
    :math:`\sum_b \frac{n_b}{N} |\mathrm{acc}_b - \mathrm{conf}_b|`. A confidence ``c`` falls in
    bin ``min(floor(c * bins), bins - 1)``. None for no items.

    Example:
        >>> expected_calibration_error([0.9, 0.9, 0.6], [True, False, True], bins=10)
        0.4
    """
    import numpy as np

    c = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if c.size == 0:
        return None
    idx = np.minimum((c * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.sum() / c.size * abs(ok[sel].mean() - c[sel].mean())
    return float(total)


def calibration(gold, pred, prob) -> dict:
    """Token-level ECE of the predicted label's probability, over all tokens and over the
    tokens whose gold or predicted tag is not ``O``."""
    conf, ok, ent = [], [], []
    for g, p, q in zip(gold, pred, prob):
        for gt, pt, c in zip(g, p, q):
            conf.append(c)
            ok.append(gt == pt)
            ent.append(gt != "O" or pt != "O")
    conf_e = [c for c, e in zip(conf, ent) if e]
    ok_e = [o for o, e in zip(ok, ent) if e]
    return {"ece_all": expected_calibration_error(conf, ok),
            "ece_entity": expected_calibration_error(conf_e, ok_e),
            "tokens": len(conf), "entity_tokens": len(conf_e)}


def sentence_counts(gold, pred):
    """Per sentence: (true positives, predicted entities, gold entities), seqeval default mode."""
    import numpy as np
    from seqeval.metrics.sequence_labeling import get_entities

    rows = []
    for g, p in zip(gold, pred):
        ge, pe = set(get_entities(list(g))), set(get_entities(list(p)))
        rows.append((len(ge & pe), len(pe), len(ge)))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def _f1(tp, n_pred, n_gold):
    import numpy as np

    den = n_pred + n_gold
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)


def paired_bootstrap(counts_a, counts_b, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict:
    """Paired bootstrap over sentences of the F1 difference a - b.

    ``counts_a``/``counts_b``: per seed, per sentence (tp, predicted, gold) arrays, the same
    sentences in the same order; the seeds' predictions are pooled (summed) for each resample
    of sentence indices, drawn once and applied to both systems.

    Returns:
        ``{"diff", "ci_low", "ci_high", "p_value", "resamples"}``: the observed pooled difference,
        the 95% percentile interval, and the two-sided p-value (twice the smaller share of
        resampled differences on either side of 0, at most 1).
    """
    import numpy as np

    a = np.sum(np.stack(counts_a), axis=0)  # (sentences, 3), pooled over seeds
    b = np.sum(np.stack(counts_b), axis=0)
    if a.shape != b.shape:
        raise ValueError(f"the two systems scored different sentences: {a.shape} vs {b.shape}")
    n = a.shape[0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    sa, sb = a[idx].sum(axis=1), b[idx].sum(axis=1)  # (resamples, 3)
    diffs = _f1(*sa.T) - _f1(*sb.T)
    observed = float(_f1(*a.sum(0)) - _f1(*b.sum(0)))
    low, high = np.percentile(diffs, [2.5, 97.5])
    p = min(1.0, 2 * min(float((diffs <= 0).mean()), float((diffs >= 0).mean())))
    return {"diff": observed, "ci_low": float(low), "ci_high": float(high), "p_value": p,
            "resamples": resamples}


def paired_tests(a: list[float], b: list[float]) -> dict:
    """Mean paired difference a - b over seeds, with the paired t-test and the Wilcoxon
    signed-rank p-values (scipy); None where a test is undefined (fewer than 2 pairs, or every
    difference 0)."""
    import numpy as np
    from scipy import stats

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    out = {"pairs": int(d.size), "mean_diff": float(d.mean()) if d.size else None,
           "sd_diff": float(d.std(ddof=1)) if d.size > 1 else None,
           "diffs": [float(x) for x in d],
           "t_test_p": None, "wilcoxon_p": None}
    if d.size >= 2 and np.any(d != 0):
        t = stats.ttest_rel(a, b)
        out["t_test_p"] = None if math.isnan(t.pvalue) else float(t.pvalue)
        out["wilcoxon_p"] = float(stats.wilcoxon(a, b).pvalue)
    return out


def same_start(a: dict, b: dict) -> bool:
    """Whether two runs of a seed saw the same data order from the same initial weights, as
    their fingerprints (``metrics.json``) say: a pair is compared only then. Runs written before
    fingerprints were recorded have none and are taken as paired."""
    return all(a.get(k) == b.get(k) for k in ("data_order", "initial_weights"))


def _summary(values: list[float]) -> dict:
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()) if v.size else None,
            "std": float(v.std(ddof=1)) if v.size > 1 else None,
            "median": float(np.median(v)) if v.size else None,
            "values": [float(x) for x in values]}


def _finite(obj):
    """The object with every non-finite float replaced by None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- aggregation


def aggregate(study: Study, *, resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """Everything ``results.json`` holds, from the finished runs."""
    runs = [r for r in study.runs() if r.finished()]
    per_loss: dict[str, dict] = {}
    counts: dict[str, dict[int, object]] = {}
    for run in runs:
        m = json.loads((run.directory / "metrics.json").read_text(encoding="utf-8"))
        entry = per_loss.setdefault(run.loss, {"seeds": [], "runs": []})
        entry["seeds"].append(run.seed)
        rec = {"seed": run.seed, "data_order": m.get("data_order"),
               "initial_weights": m.get("initial_weights"), "train_time_s": m.get("train_time_s"),
               "train_tokens_per_s": m.get("train_tokens_per_s"), "best_epoch": m.get("best_epoch")}
        for split in SPLITS:
            if split not in m:
                continue
            d, s = m[split]["default"], m[split]["strict"]
            rec[split] = {"f1": d["f1"], "precision": d["precision"], "recall": d["recall"],
                          "f1_strict": s["f1"],
                          "per_type": {k: v["f1"] for k, v in d["per_type"].items()},
                          "support": {k: v["support"] for k, v in d["per_type"].items()}}
            pred_file = run.directory / f"predictions_{split}.conll.gz"
            if pred_file.is_file():
                gold, pred, prob = read_predictions(pred_file)
                rec[split]["calibration"] = calibration(gold, pred, prob)
                if split == "test":
                    counts.setdefault(run.loss, {})[run.seed] = sentence_counts(gold, pred)
        entry["runs"].append(rec)

    out = {"study": study.name, "config": str(study.path), "baseline": study.baseline,
           "seeds": study.seeds, "planned_runs": len(study.runs()), "finished_runs": len(runs),
           "losses": {}}
    rare = None
    base_runs = per_loss.get(study.baseline, {}).get("runs", [])
    if base_runs and "test" in base_runs[0]:
        support = base_runs[0]["test"]["support"]
        if support:
            rare = min(support, key=lambda k: (support[k], k))
    out["rarest_type"] = rare
    for loss in study.losses:
        if loss not in per_loss:
            continue
        rs = per_loss[loss]["runs"]
        entry = {"seeds": [r["seed"] for r in rs], "runs": rs}
        for split in SPLITS:
            have = [r for r in rs if split in r]
            if not have:
                continue
            sec = {key: _summary([r[split][key] for r in have])
                   for key in ("f1", "f1_strict", "precision", "recall")}
            types = sorted({t for r in have for t in r[split]["per_type"]})
            sec["per_type_f1"] = {t: _summary([r[split]["per_type"].get(t, 0.0) for r in have])
                                  for t in types}
            cal = [r[split]["calibration"] for r in have if "calibration" in r[split]]
            if cal:
                sec["ece_all"] = _summary([c["ece_all"] for c in cal])
                sec["ece_entity"] = _summary([c["ece_entity"] for c in cal])
            entry[split] = sec
        entry["train_time_s"] = _summary([r["train_time_s"] for r in rs])
        entry["train_tokens_per_s"] = _summary([r["train_tokens_per_s"] for r in rs])
        if loss != study.baseline and study.baseline in per_loss:
            base = {r["seed"]: r for r in per_loss[study.baseline]["runs"]}
            paired, unpaired = [], []
            for r in rs:
                if r["seed"] not in base:
                    continue
                if same_start(r, base[r["seed"]]):
                    paired.append((r, base[r["seed"]]))
                else:
                    unpaired.append(r["seed"])
            cmp_ = {}
            for split in SPLITS:
                pairs = [(a, b) for a, b in paired if split in a and split in b]
                for key in ("f1", "precision", "recall"):
                    cmp_[f"{split}_{key}"] = paired_tests([a[split][key] for a, b in pairs],
                                                          [b[split][key] for a, b in pairs])
                if rare and split == "test":
                    cmp_["test_rare_f1"] = paired_tests(
                        [a[split]["per_type"].get(rare, 0.0) for a, b in pairs],
                        [b[split]["per_type"].get(rare, 0.0) for a, b in pairs])
            seeds = [a["seed"] for a, _ in paired
                     if a["seed"] in counts.get(loss, {}) and a["seed"] in counts.get(study.baseline, {})]
            if seeds:
                cmp_["test_bootstrap"] = paired_bootstrap(
                    [counts[loss][s] for s in seeds], [counts[study.baseline][s] for s in seeds],
                    resamples=resamples)
                cmp_["test_bootstrap"]["seeds"] = seeds
            cmp_["unpaired_seeds"] = unpaired
            entry["vs_baseline"] = cmp_
        out["losses"][loss] = entry
    return _finite(out)


def _pct(x, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}"


def _mean_sd(summary: dict) -> str:
    """``mean ± sd`` in percent (the mean alone for one value)."""
    sd = summary["std"]
    return _pct(summary["mean"]) + ("" if sd is None else f" ± {_pct(sd)}")


def _p(x, resamples: int | None = None) -> str:
    if x is None:
        return "n/a"
    if resamples and x == 0:
        return f"< {1 / resamples:.3f}"  # no resample crossed 0
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def markdown(results: dict) -> str:
    """The per-dataset report: tables of F1, the paired comparison, rare type, calibration, time."""
    base = results["baseline"]
    losses = results["losses"]
    lines = [f"# Loss study: {results['study']}", "",
             f"Config `{results['config']}`; seeds {results['seeds']}; baseline `{base}`. "
             "Entity scores are seqeval's default mode unless marked strict; mean ± standard "
             "deviation over seeds, in percent.", ""]
    lines += ["## Test and dev F1", "",
              "| loss | seeds | test F1 | test strict F1 | test P | test R | dev F1 |",
              "|---|---:|---:|---:|---:|---:|---:|"]

    def ms(sec, key):
        return _mean_sd(sec[key]) if sec and key in sec else "n/a"

    for name, e in losses.items():
        lines.append(f"| {name} | {len(e['seeds'])} | {ms(e.get('test'), 'f1')} | "
                     f"{ms(e.get('test'), 'f1_strict')} | {ms(e.get('test'), 'precision')} | "
                     f"{ms(e.get('test'), 'recall')} | {ms(e.get('dev'), 'f1')} |")
    lines += ["", f"## Against `{base}`, paired by seed", "",
              "Mean paired difference of test F1 over seeds (percentage points) with the paired "
              "t-test and Wilcoxon signed-rank p-values; then the paired bootstrap over test "
              f"sentences ({BOOTSTRAP_RESAMPLES} resamples) on the predictions of all paired "
              "seeds pooled: the pooled difference, its 95% interval and p-value.", "",
              "| loss | pairs | Δ test F1 | t-test p | Wilcoxon p | Δ precision | Δ recall | "
              "bootstrap Δ [95% CI] | bootstrap p |",
              "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for name, e in losses.items():
        v = e.get("vs_baseline")
        if not v:
            continue
        f = v["test_f1"]
        bs = v.get("test_bootstrap")
        bcell = (f"{_pct(bs['diff'])} [{_pct(bs['ci_low'])}, {_pct(bs['ci_high'])}]" if bs else "n/a")
        lines.append(f"| {name} | {f['pairs']} | {_pct(f['mean_diff'])} | {_p(f['t_test_p'])} | "
                     f"{_p(f['wilcoxon_p'])} | {_pct(v['test_precision']['mean_diff'])} | "
                     f"{_pct(v['test_recall']['mean_diff'])} | {bcell} | "
                     f"{_p(bs['p_value'], bs['resamples']) if bs else 'n/a'} |")
    unpaired = {n: e["vs_baseline"]["unpaired_seeds"] for n, e in losses.items()
                if e.get("vs_baseline", {}).get("unpaired_seeds")}
    if unpaired:
        lines += ["", "Left out of the paired comparison, because their data order or initial "
                  f"weights differ from `{base}`'s run of the same seed (rerun them): " +
                  "; ".join(f"`{n}` seeds {v}" for n, v in unpaired.items()) + "."]
    rare = results.get("rarest_type")
    if rare:
        lines += ["", f"## Per-type test F1 (rarest type in the test set: `{rare}`)", ""]
        types = sorted({t for e in losses.values() for t in e.get("test", {}).get("per_type_f1", {})})
        lines += ["| loss | " + " | ".join(f"{t}{' (rarest)' if t == rare else ''}" for t in types)
                  + f" | Δ {rare} vs {base} |",
                  "|---|" + "---:|" * (len(types) + 1)]
        for name, e in losses.items():
            pt = e.get("test", {}).get("per_type_f1", {})
            cells = [_pct(pt[t]["mean"]) if t in pt else "n/a" for t in types]
            d = e.get("vs_baseline", {}).get("test_rare_f1")
            cells.append(_pct(d["mean_diff"]) if d else "")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Calibration and cost", "",
              f"Token-level expected calibration error ({ECE_BINS} bins) of the predicted label's "
              "probability on test, over all tokens and over tokens whose gold or predicted tag "
              "is not `O`; training time (the epochs only, evaluation excluded) and real "
              "(non-padding) training tokens per second, as measured, the median over seeds and "
              "the range: they depend on what else the machine was doing, so compare them only "
              "between runs made alike.", "",
              "| loss | ECE all | ECE entity tokens | train time (s) | tokens/s |",
              "|---|---:|---:|---:|---:|"]

    def spread(summary: dict) -> str:
        v = summary["values"]
        return f"{summary['median']:.0f} ({min(v):.0f}-{max(v):.0f})" if v else "-"

    for name, e in losses.items():
        t = e.get("test", {})
        lines.append(f"| {name} | {ms(t, 'ece_all')} | {ms(t, 'ece_entity')} | "
                     f"{spread(e['train_time_s'])} | {spread(e['train_tokens_per_s'])} |")
    lines += ["", "![test F1 by loss](f1_by_loss.png)",
              "![precision against recall](precision_recall.png)",
              "![rare-type F1 by loss](rare_type_f1.png)", ""]
    return "\n".join(lines)


def _pyplot():
    """pyplot without a display, writing SVGs whose element ids do not change between runs (so
    a regenerated figure shows in a diff only where it changed)."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "seqlab"
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, stem: Path) -> list[Path]:
    """``stem.png`` and ``stem.svg`` (without a date, so unchanged figures stay unchanged)."""
    written = []
    for ext in ("png", "svg"):
        path = stem.with_name(f"{stem.name}.{ext}")
        fig.savefig(path, dpi=120, bbox_inches="tight",
                    metadata={"Date": None} if ext == "svg" else None)
        written.append(path)
    plt.close(fig)
    return written


def figures(results: dict, directory: Path) -> list[Path]:
    """F1 by loss with error bars, precision against recall (a point per seed), rare-type F1 by
    loss; PNG and SVG each."""
    plt = _pyplot()
    losses = {k: v for k, v in results["losses"].items() if "test" in v}
    names = list(losses)
    written = []

    def save(fig, stem):
        written.extend(_save(plt, fig, directory / stem))

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, n in enumerate(names):
        s = losses[n]["test"]["f1"]
        ax.errorbar(i, 100 * s["mean"], yerr=100 * (s["std"] or 0), fmt="o", capsize=4,
                    color="C3" if n == results["baseline"] else "C0")
        ax.scatter([i] * len(s["values"]), [100 * v for v in s["values"]], s=10, color="grey",
                   alpha=0.6, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("test entity F1 (%)")
    ax.set_title(f"{results['study']}: test F1 by loss (mean ± sd, dots: seeds)")
    ax.grid(axis="y", alpha=0.3)
    save(fig, "f1_by_loss")

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for i, n in enumerate(names):
        p, r = losses[n]["test"]["precision"]["values"], losses[n]["test"]["recall"]["values"]
        ax.scatter([100 * x for x in r], [100 * x for x in p], label=n, color=f"C{i % 10}",
                   marker="s" if n == results["baseline"] else "o")
    ax.set_xlabel("test recall (%)")
    ax.set_ylabel("test precision (%)")
    ax.set_title(f"{results['study']}: precision against recall, a point per seed")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    save(fig, "precision_recall")

    rare = results.get("rarest_type")
    if rare:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for i, n in enumerate(names):
            s = losses[n]["test"]["per_type_f1"].get(rare)
            if s is None:
                continue
            ax.errorbar(i, 100 * s["mean"], yerr=100 * (s["std"] or 0), fmt="o", capsize=4,
                        color="C3" if n == results["baseline"] else "C0")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_ylabel(f"test F1 of {rare} (%)")
        ax.set_title(f"{results['study']}: rarest type ({rare}) F1 by loss")
        ax.grid(axis="y", alpha=0.3)
        save(fig, "rare_type_f1")
    return written


def report(study: Study, *, resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """Write ``results.json``, ``report.md`` and the figures into the study's output directory."""
    results = aggregate(study, resamples=resamples)
    study.output_dir.mkdir(parents=True, exist_ok=True)
    (study.output_dir / "results.json").write_text(
        json.dumps(results, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    (study.output_dir / "report.md").write_text(markdown(results), encoding="utf-8")
    if results["losses"]:
        figures(results, study.output_dir)
    return results


# --------------------------------------------------------------------------- across studies


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
        if not isinstance(results, dict) or not {"study", "baseline", "losses"} <= set(results):
            raise DataError("expected the results of `seqlab study --report` (keys study, "
                            "baseline, losses)", str(path))
        out.append(results)
    return out


def _signed(x) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f}"


def _wins(cmp_: dict) -> str:
    d = cmp_["test_f1"].get("diffs")
    return "n/a" if d is None else f"{sum(x > 0 for x in d)}/{len(d)}"


def _cleared(cmp_: dict) -> bool:
    """Whether the pooled bootstrap's 95% interval of the difference excludes 0."""
    bs = cmp_.get("test_bootstrap")
    return bool(bs) and (bs["ci_low"] > 0 or bs["ci_high"] < 0)


def _grid_state(results: dict) -> str:
    if "planned_runs" not in results:
        return ""
    done, planned = results["finished_runs"], results["planned_runs"]
    return "" if done == planned else f", {done} of {planned} runs"


def headline_table(results: dict) -> list[str]:
    """One study in one table: test F1, the paired comparison with the baseline, the rarest
    type's F1 and calibration, a row per loss (percent)."""
    rare = results.get("rarest_type")
    lines = ["| loss | seeds | test F1 | Δ F1 | wins | t-test p | Wilcoxon p | Δ precision | "
             f"Δ recall | bootstrap Δ [95% CI] | {rare or 'rarest type'} F1 | ECE all | "
             "ECE entity |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for name, e in results["losses"].items():
        t = e.get("test")
        if not t:
            continue
        f1 = _mean_sd(t["f1"])
        rare_f1 = _pct(t["per_type_f1"][rare]["mean"]) if rare in t.get("per_type_f1", {}) else "n/a"
        ece = [_pct(t[k]["mean"], 1) if k in t else "n/a" for k in ("ece_all", "ece_entity")]
        v = e.get("vs_baseline")
        if v:
            bs = v.get("test_bootstrap")
            boot = (f"{_signed(bs['diff'])} [{_signed(bs['ci_low'])}, {_signed(bs['ci_high'])}]"
                    if bs else "n/a")
            cmp_cells = [_signed(v["test_f1"]["mean_diff"]), _wins(v), _p(v["test_f1"]["t_test_p"]),
                         _p(v["test_f1"]["wilcoxon_p"]), _signed(v["test_precision"]["mean_diff"]),
                         _signed(v["test_recall"]["mean_diff"]), boot]
        else:
            cmp_cells = [""] * 7
        lines.append(f"| {name} | {len(e['seeds'])} | {f1} | " + " | ".join(cmp_cells) +
                     f" | {rare_f1} | {ece[0]} | {ece[1]} |")
    return lines


def summary_markdown(studies: list[dict]) -> str:
    """The loss studies side by side: the paired difference in test F1 to each study's baseline,
    then each study's headline table."""
    losses = list(dict.fromkeys(n for r in studies for n in r["losses"]))
    lines = ["# Loss studies: summary", "",
             "Written by `seqlab study-summary` from the `results.json` beside it. Test entity F1 "
             "(seqeval default mode), in percent. For each loss: the mean paired difference to "
             "the study's baseline over seeds, in points, and in how many seeds the loss scored "
             "higher. **Bold**: the paired bootstrap over test sentences (pooled seeds, 1,000 "
             "resamples) puts the difference's 95% interval clear of 0.", "",
             "| loss | " + " | ".join(f"{r['study']}{_grid_state(r)}" for r in studies)
             + " | mean Δ |",
             "|---|" + "---:|" * (len(studies) + 1)]
    for name in losses:
        cells, diffs = [], []
        for r in studies:
            e = r["losses"].get(name)
            if e is None or "test" not in e:
                cells.append("-")
            elif name == r["baseline"]:
                cells.append(_mean_sd(e["test"]["f1"]) + " (F1)")
            elif e.get("vs_baseline", {}).get("test_f1", {}).get("mean_diff") is None:
                cells.append("n/a")
            else:
                v = e["vs_baseline"]
                d = v["test_f1"]["mean_diff"]
                if not _grid_state(r):  # a grid still running does not move the ranking
                    diffs.append(d)
                text = _signed(d)
                cells.append((f"**{text}**" if _cleared(v) else text) + f" ({_wins(v)})")
        mean = _signed(sum(diffs) / len(diffs)) if diffs else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean} |")
    lines += ["", "The mean Δ is over the complete studies where the loss has a paired "
              "comparison (a study still running is left out of it); the studies differ in size "
              "and difficulty, so read it as a ranking, not an effect size.", "", "![difference in test F1 to the baseline](summary_delta_f1.png)", ""]
    for r in studies:
        lines += [f"## {r['study']}{_grid_state(r)}", "",
                  f"Config `{r['config']}`, baseline `{r['baseline']}`; every figure is in "
                  f"[its report]({r['study']}/report.md). Δ: the loss minus `{r['baseline']}`, "
                  "mean over paired seeds; wins: seeds where the loss scored higher; ECE: "
                  "token-level expected calibration error of the predicted label's probability, "
                  "over all tokens and over entity tokens.", ""]
        lines += headline_table(r) + [""]
    return "\n".join(lines)


def summary_figure(studies: list[dict], directory: Path) -> list[Path]:
    """Difference in test F1 to the baseline, a row per loss and a colour per study: the mean
    paired difference, the bootstrap's 95% interval, and a dot per seed. PNG and SVG."""
    import matplotlib.ticker

    plt = _pyplot()
    losses = [n for n in dict.fromkeys(n for r in studies for n in r["losses"])
              if any(r["losses"].get(n, {}).get("vs_baseline") for r in studies)]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.55 * max(1, len(losses))))
    height = 0.7 / max(1, len(studies))
    for j, r in enumerate(studies):
        labelled = False
        for i, name in enumerate(losses):
            v = r["losses"].get(name, {}).get("vs_baseline")
            if not v or v["test_f1"].get("mean_diff") is None:
                continue
            y = i - 0.35 + height * (j + 0.5)
            bs = v.get("test_bootstrap")
            err = None
            if bs:
                d = v["test_f1"]["mean_diff"]
                err = [[100 * max(0.0, d - bs["ci_low"])], [100 * max(0.0, bs["ci_high"] - d)]]
            ax.errorbar(100 * v["test_f1"]["mean_diff"], y, xerr=err, fmt="o", capsize=3,
                        color=f"C{j % 10}", label=None if labelled else r["study"])
            labelled = True
            seeds = v["test_f1"].get("diffs") or []
            ax.scatter([100 * x for x in seeds], [y] * len(seeds), s=8, color=f"C{j % 10}",
                       alpha=0.4, zorder=3)
    ax.axvline(0, color="grey", lw=1)
    # linear within ±5 points, where the losses that work differ; logarithmic beyond, so that a
    # loss that fails does not squeeze the rest into a few pixels
    ax.set_xscale("symlog", linthresh=5, linscale=1)
    low, high = ax.get_xlim()
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(
        [x for x in (-80, -40, -20, -10, -5, -2, 0, 2, 5, 10, 20, 40, 80) if low <= x <= high]))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:+g}" if x else "0"))
    ax.set_yticks(range(len(losses)), losses)
    ax.invert_yaxis()
    ax.set_xlabel("test entity F1 minus the baseline's (points; linear within ±5, log beyond)")
    ax.set_title("Δ test F1 to cross-entropy, paired by seed\n"
                 "(point: mean over seeds; bar: bootstrap 95% interval; dots: seeds)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="x", alpha=0.3)
    return _save(plt, fig, directory / "summary_delta_f1")


def write_summary(directory: str | Path) -> list[dict]:
    """``summary.md`` and ``summary_delta_f1.{png,svg}`` in ``directory`` from the studies under it."""
    directory = Path(directory)
    studies = read_results(directory)
    (directory / "summary.md").write_text(summary_markdown(studies), encoding="utf-8")
    summary_figure(studies, directory)
    return studies
