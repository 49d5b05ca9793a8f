"""`seqlab study`: grid expansion, shards, resume, aggregation against scipy, ECE by hand, and a
tiny study end to end."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from seqlab.cli import main
from seqlab.errors import ConfigError, DataError
from seqlab.study import (Run, aggregate, calibration, expected_calibration_error, load_study,
                          paired_bootstrap, paired_tests, parse_shard, read_predictions, report,
                          run_grid, sentence_counts, shard, write_summary)

scipy_stats = pytest.importorskip("scipy.stats")


def _write_study(tmp_path: Path, *, seeds=(1, 2), losses=None, base=None) -> Path:
    losses = losses or {"ce": {"name": "ce"}, "focal-g2": {"name": "focal", "gamma": 2.0},
                        "ce-isqrt": {"name": "ce", "class_weight": "inverse_sqrt"}}
    base = base or {"task": "ner", "data": {"dataset": "conll2003"},
                    "train": {"epochs": 1, "batch_size": 4}}
    path = tmp_path / "study-x.yaml"
    path.write_text(yaml.safe_dump({"study": {"output_dir": str(tmp_path / "out"),
                                              "seeds": list(seeds), "baseline": "ce"},
                                    "base": base, "losses": losses}, sort_keys=False))
    return path


def test_grid_expands_seed_by_seed_with_paired_settings(tmp_path):
    study = load_study(_write_study(tmp_path))
    runs = study.runs()
    assert [r.name for r in runs] == ["ce/seed-1", "focal-g2/seed-1", "ce-isqrt/seed-1",
                                      "ce/seed-2", "focal-g2/seed-2", "ce-isqrt/seed-2"]
    for r in runs:
        t = r.config["train"]
        assert t["seed"] == r.seed and t["save_model"] is False and t["overwrite"] is True
        assert Path(t["output_dir"]) == tmp_path / "out" / "runs" / r.loss / f"seed-{r.seed}"
        # only the loss differs between the runs of a seed
        assert {k: v for k, v in r.config.items() if k != "loss"}["data"] == {"dataset": "conll2003"}
    assert runs[2].config["loss"] == {"name": "ce", "class_weight": "inverse_sqrt"}


def test_a_grid_entry_may_change_other_sections_than_the_loss(tmp_path):
    study = load_study(_write_study(tmp_path, losses={
        "ce": {"name": "ce"},
        "ce-fast": {"loss": {"name": "ce"}, "train": {"learning_rate": 1e-4}}}))
    ce, fast = study.runs()[:2]
    assert fast.config["loss"] == ce.config["loss"] == {"name": "ce"}
    assert fast.config["train"]["learning_rate"] == 1e-4 and "learning_rate" not in ce.config["train"]
    # the base's other train keys survive the merge
    assert fast.config["train"]["epochs"] == ce.config["train"]["epochs"] == 1


@pytest.mark.parametrize("losses, match", [
    ({"ce": {"name": "ce"}, "bad": {"name": "focal", "gama": 1}}, r"loss 'bad': .*loss\.gama"),
    ({"ce": {"name": "ce"}, "w": {"name": "ce", "class_weight": "log"}}, r"class_weight"),
    ({"focal": {"name": "focal"}}, r"baseline 'ce' is not one of the losses"),
])
def test_bad_study_config(tmp_path, losses, match):
    with pytest.raises(ConfigError, match=match):
        load_study(_write_study(tmp_path, losses=losses))


def test_shards_partition_the_grid(tmp_path):
    runs = load_study(_write_study(tmp_path, seeds=(1, 2, 3))).runs()
    parts = [shard(runs, i, 4) for i in range(1, 5)]
    names = [r.name for p in parts for r in p]
    assert sorted(names) == sorted(r.name for r in runs) and len(names) == len(set(names))
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/2", "3/2", "x", "1-2"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)


def test_finished_runs_are_skipped_and_incomplete_ones_redone(tmp_path):
    study = load_study(_write_study(tmp_path))
    runs = study.runs()
    runs[0].directory.mkdir(parents=True)
    (runs[0].directory / "metrics.json").write_text("{}")           # finished
    runs[1].directory.mkdir(parents=True)
    (runs[1].directory / "predictions_dev.conll.gz").write_bytes(b"")  # no metrics.json
    staging = runs[2].directory.with_name(runs[2].directory.name + ".incomplete")
    staging.mkdir(parents=True)
    (staging / "config.yaml").write_text("{}")

    trained = []

    def fake(run: Run):
        assert not run.directory.exists()  # leftovers cleared first
        assert not run.directory.with_name(run.directory.name + ".incomplete").exists()
        trained.append(run.name)
        run.directory.mkdir(parents=True)
        (run.directory / "metrics.json").write_text("{}")

    done = run_grid(study, progress=False, runner=fake)
    assert [r.name for r in done] == trained == [r.name for r in runs[1:]]
    assert run_grid(study, progress=False, runner=fake) == []  # all finished now
    # a shard runs only its share
    trained.clear()
    for r in runs:
        (r.directory / "metrics.json").unlink()
    run_grid(study, shard_spec="2/3", progress=False, runner=fake)
    assert trained == [r.name for r in runs[1::3]]


def test_ece_against_a_hand_computation():
    # 15 bins; confidences 0.95 (bin 14), 0.95, 0.50 (bin 7), 0.10 (bin 1)
    conf = [0.95, 0.95, 0.50, 0.10]
    ok = [True, False, True, False]
    hand = (2 / 4) * abs(0.5 - 0.95) + (1 / 4) * abs(1.0 - 0.5) + (1 / 4) * abs(0.0 - 0.1)
    assert expected_calibration_error(conf, ok) == pytest.approx(hand)
    assert expected_calibration_error([1.0], [True]) == pytest.approx(0.0)  # 1.0 in the last bin
    assert expected_calibration_error([], []) is None
    cal = calibration([["O", "B-PER", "O"]], [["O", "B-PER", "B-LOC"]], [[0.9, 0.6, 0.3]])
    assert cal["tokens"] == 3 and cal["entity_tokens"] == 2
    assert cal["ece_entity"] == pytest.approx(0.5 * abs(1 - 0.6) + 0.5 * abs(0 - 0.3))


def test_paired_tests_match_scipy():
    a, b = [0.81, 0.79, 0.84, 0.80, 0.83], [0.80, 0.80, 0.81, 0.78, 0.80]
    out = paired_tests(a, b)
    assert out["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert out["t_test_p"] == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue)
    assert out["wilcoxon_p"] == pytest.approx(scipy_stats.wilcoxon(a, b).pvalue)
    assert out["diffs"] == pytest.approx(np.subtract(a, b).tolist())
    same = paired_tests([0.5, 0.6], [0.5, 0.6])
    assert same["mean_diff"] == 0 and same["t_test_p"] is None


def test_paired_bootstrap():
    rng = np.random.default_rng(3)
    n = 400
    gold = rng.integers(0, 4, n)
    tp_b = np.minimum(gold, rng.integers(0, 4, n))
    tp_a = np.minimum(gold, tp_b + (rng.random(n) < 0.3))
    a = np.stack([tp_a, gold, gold], 1)   # predicted = gold count: F1 = recall
    b = np.stack([tp_b, gold, gold], 1)
    out = paired_bootstrap([a, a], [b, b], resamples=1000, seed=0)
    direct = tp_a.sum() / gold.sum() - tp_b.sum() / gold.sum()
    assert out["diff"] == pytest.approx(direct)
    assert out["ci_low"] < direct < out["ci_high"] and out["ci_low"] > 0 and out["p_value"] < 0.01
    # the interval agrees with scipy's paired percentile bootstrap of the same statistic
    res = scipy_stats.bootstrap((tp_a, tp_b, gold), lambda x, y, g, axis=-1:
                                (x.sum(axis) - y.sum(axis)) / g.sum(axis), paired=True,
                                vectorized=True, n_resamples=4000, method="percentile",
                                random_state=np.random.default_rng(1))
    width = out["ci_high"] - out["ci_low"]
    assert abs(res.confidence_interval.low - out["ci_low"]) < 0.15 * width
    assert abs(res.confidence_interval.high - out["ci_high"]) < 0.15 * width
    with pytest.raises(ValueError, match="different sentences"):
        paired_bootstrap([a], [b[:-1]])


def _fake_run(directory: Path, f1s: dict, sentences: list[tuple[list[str], list[str], list[float]]],
              order: str = "same"):
    directory.mkdir(parents=True)
    metrics = {"train_time_s": 10.0, "train_tokens_per_s": 100.0, "best_epoch": 1,
               "data_order": order, "initial_weights": "w0"}
    for split, f1 in f1s.items():
        d = {"f1": f1, "precision": f1 + 0.01, "recall": f1 - 0.01, "support": 3,
             "per_type": {"PER": {"f1": f1, "support": 2, "precision": 0, "recall": 0},
                          "LOC": {"f1": f1 / 2, "support": 1, "precision": 0, "recall": 0}}}
        metrics[split] = {"default": d, "strict": d}
    (directory / "metrics.json").write_text(json.dumps(metrics))
    with gzip.open(directory / "predictions_test.conll.gz", "wt") as fh:
        for gold, pred, prob in sentences:
            for k, (g, p, q) in enumerate(zip(gold, pred, prob)):
                fh.write(f"w{k} {g} {p} {q}\n")
            fh.write("\n")


def test_aggregation_on_fixture_metrics(tmp_path):
    study = load_study(_write_study(tmp_path, seeds=(1, 2, 3),
                                    losses={"ce": {"name": "ce"}, "focal": {"name": "focal"}}))
    sents_ce = [(["B-PER", "I-PER", "O"], ["B-PER", "I-PER", "O"], [0.9, 0.8, 0.7]),
                (["B-LOC", "O"], ["O", "O"], [0.6, 0.9])]
    sents_focal = [(["B-PER", "I-PER", "O"], ["B-PER", "I-PER", "O"], [0.9, 0.8, 0.7]),
                   (["B-LOC", "O"], ["B-LOC", "O"], [0.6, 0.9])]
    f1 = {"ce": [0.70, 0.72, 0.71], "focal": [0.74, 0.73, 0.77]}
    for run in study.runs():
        k = run.seed - 1
        _fake_run(run.directory, {"dev": f1[run.loss][k] + 0.1, "test": f1[run.loss][k]},
                  sents_ce if run.loss == "ce" else sents_focal)
    res = aggregate(study, resamples=200)
    focal = res["losses"]["focal"]
    assert focal["test"]["f1"]["mean"] == pytest.approx(np.mean(f1["focal"]))
    assert focal["test"]["f1"]["std"] == pytest.approx(np.std(f1["focal"], ddof=1))
    assert focal["test"]["f1"]["values"] == pytest.approx(f1["focal"])
    cmp_ = focal["vs_baseline"]
    assert cmp_["test_f1"]["t_test_p"] == pytest.approx(scipy_stats.ttest_rel(f1["focal"], f1["ce"]).pvalue)
    assert cmp_["test_f1"]["wilcoxon_p"] == pytest.approx(scipy_stats.wilcoxon(f1["focal"], f1["ce"]).pvalue)
    # pooled bootstrap: ce finds 1 of 2 entities per seed (F1 2/3), focal both (F1 1)
    assert cmp_["test_bootstrap"]["diff"] == pytest.approx(1 - 2 / 3)
    assert res["rarest_type"] == "LOC"
    assert cmp_["test_rare_f1"]["mean_diff"] == pytest.approx(np.mean(np.subtract(f1["focal"], f1["ce"])) / 2)
    assert focal["test"]["ece_all"]["mean"] is not None
    json.dumps(res, allow_nan=False)  # strict JSON


def test_sentence_counts_reproduce_seqeval():
    from seqeval.metrics import f1_score

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"], ["I-MISC", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG", "O"], ["I-MISC", "B-LOC"]]
    tp, n_pred, n_gold = sentence_counts(gold, pred).sum(0)
    assert 2 * tp / (n_pred + n_gold) == pytest.approx(f1_score(gold, pred))


def test_tiny_study_end_to_end(tmp_path, fixtures, tiny_encoder, capsys):
    base = {"task": "ner",
            "data": {"train_file": str(fixtures / "train.conll"), "dev_file": str(fixtures / "dev.conll"),
                     "test_file": str(fixtures / "test.conll")},
            "model": {"encoder": str(tiny_encoder), "max_length": 24},
            "train": {"epochs": 2, "batch_size": 4, "learning_rate": 2e-3, "warmup_ratio": 0}}
    # "ce" and "ce-again" are the same loss: with paired seeds they must give identical runs
    path = _write_study(tmp_path, seeds=(1, 2), base=base,
                        losses={"ce": {"name": "ce"}, "ce-again": {"name": "ce"},
                                "focal-g2": {"name": "focal", "gamma": 2.0}})
    assert main(["study", str(path), "--no-progress"]) == 0
    out = tmp_path / "out"
    res = json.loads((out / "results.json").read_text())
    assert set(res["losses"]) == {"ce", "ce-again", "focal-g2"}
    again = res["losses"]["ce-again"]
    assert again["vs_baseline"]["test_f1"]["mean_diff"] == 0.0
    assert again["vs_baseline"]["test_bootstrap"]["diff"] == 0.0
    assert again["test"]["f1"]["values"] == res["losses"]["ce"]["test"]["f1"]["values"]
    run = out / "runs" / "focal-g2" / "seed-2"
    assert (run / "metrics.json").is_file() and (run / "predictions_test.conll.gz").is_file()
    assert not (run / "model.safetensors").exists()
    gold, pred, prob = read_predictions(run / "predictions_test.conll.gz")
    assert all(0.0 <= q <= 1.0 for s in prob for q in s) and len(gold) == len(pred)
    for name in ("report.md", "f1_by_loss.png", "f1_by_loss.svg", "precision_recall.png"):
        assert (out / name).is_file(), name
    assert "| ce-again | 2 | 0.00 |" in (out / "report.md").read_text()
    printed = capsys.readouterr().out  # the headline table, then where the report is
    assert "| ce-again | 2 | " in printed and "| +0.00 | 0/2 |" in printed
    assert printed.rstrip().endswith(f"6 of 6 runs finished; report in {out / 'report.md'}")
    # a second call trains nothing and reports again
    mtime = (run / "metrics.json").stat().st_mtime
    assert main(["study", str(path), "--no-progress"]) == 0
    assert (run / "metrics.json").stat().st_mtime == mtime


def test_runs_that_did_not_start_alike_are_not_paired(tmp_path):
    study = load_study(_write_study(tmp_path, seeds=(1, 2, 3),
                                    losses={"ce": {"name": "ce"}, "focal": {"name": "focal"}}))
    sents = [(["B-PER", "O"], ["B-PER", "O"], [0.9, 0.8])]
    for run in study.runs():
        order = "other" if (run.loss, run.seed) == ("focal", 2) else "same"
        _fake_run(run.directory, {"test": 0.5 + 0.01 * run.seed}, sents, order=order)
    cmp_ = aggregate(study, resamples=50)["losses"]["focal"]["vs_baseline"]
    assert cmp_["unpaired_seeds"] == [2] and cmp_["test_f1"]["pairs"] == 2
    assert cmp_["test_bootstrap"]["seeds"] == [1, 3]


def _fixture_study(tmp_path: Path, name: str, f1: dict) -> Path:
    """A study under ``tmp_path/studies/<name>`` with fake runs of the given test F1s, reported."""
    root = tmp_path / "studies"
    path = tmp_path / f"study-{name}.yaml"
    path.write_text(yaml.safe_dump({
        "study": {"output_dir": str(root / name), "seeds": [1, 2, 3], "baseline": "ce"},
        "base": {"task": "ner", "data": {"dataset": "conll2003"}, "train": {"epochs": 1}},
        "losses": {k: {"name": "focal" if k != "ce" else "ce"} for k in f1}}))
    study = load_study(path)
    good = [(["B-PER", "O"], ["B-PER", "O"], [0.9, 0.8])]
    bad = [(["B-PER", "O"], ["O", "O"], [0.9, 0.8])]
    for run in study.runs():
        _fake_run(run.directory, {"test": f1[run.loss][run.seed - 1]},
                  good if run.loss != "ce" else bad)
    report(study)
    return root


def test_summary_sets_the_studies_side_by_side(tmp_path):
    _fixture_study(tmp_path, "a", {"ce": [0.70, 0.72, 0.71], "focal": [0.74, 0.73, 0.70]})
    root = _fixture_study(tmp_path, "b", {"ce": [0.50, 0.52, 0.51], "focal": [0.48, 0.51, 0.49]})
    assert main(["study-summary", str(root)]) == 0
    text = (root / "summary.md").read_text()
    # a: +1.33 points, higher in 2 of 3 seeds; the bootstrap (focal finds every entity, ce
    # none) clears 0, so the cell is bold. b: -1.67, 0 of 3.
    assert "| focal | **+1.33** (2/3) | **-1.67** (0/3) | -0.17 |" in text
    assert "| ce | 71.00 ± 1.00 (F1) | 51.00 ± 1.00 (F1) |  |" in text
    assert "## a" in text and "## b" in text and "| focal | 3 | 72.33 ± 2.08 | +1.33 | 2/3 |" in text
    for ext in ("png", "svg"):
        assert (root / f"summary_delta_f1.{ext}").stat().st_size > 0


def test_summary_of_a_partial_grid_says_so(tmp_path):
    root = _fixture_study(tmp_path, "a", {"ce": [0.70, 0.72, 0.71], "focal": [0.74, 0.73, 0.70]})
    (root / "a" / "runs" / "focal" / "seed-3" / "metrics.json").unlink()
    report(load_study(tmp_path / "study-a.yaml"))
    assert write_summary(root)[0]["finished_runs"] == 5
    text = (root / "summary.md").read_text()
    assert "| loss | a, 5 of 6 runs | mean Δ |" in text
    assert "| focal | **+2.50** (2/2) |  |" in text  # a running grid gives no mean Δ


def test_summary_of_nothing_or_of_a_broken_file_is_one_line(tmp_path, capsys):
    assert main(["study-summary", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no */results.json" in err
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "results.json").write_text("{")
    assert main(["study-summary", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'x' / 'results.json'}: not JSON" in err
    (tmp_path / "x" / "results.json").write_text("[]")
    with pytest.raises(DataError, match="expected the results"):
        write_summary(tmp_path)
