"""seqlab study: the grid, its statistics against scipy and direct computations, the report and
the summary."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from seqlab.cli import main
from seqlab.config import apply_overrides
from seqlab.errors import ConfigError, DataError, SeqlabError
from seqlab.study import (Run, aggregate, load_study, parse_shard, report, run_grid, shard,
                          write_summary)
from seqlab.study import stats
from seqlab.tasks.ner import NerTask
from seqlab.tasks.ner_files import read_predictions
from seqlab.study.summary import read_results, summary_markdown

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


def test_a_variant_may_have_seeds_of_its_own(tmp_path):
    """Taking a few variants to more seeds trains only those: the others keep study.seeds, a
    derived variant follows its source, and runs stay seed by seed."""
    study = load_study(_write_study(tmp_path, seeds=(1, 2), losses={
        "ce": {"name": "ce", "seeds": [1, 2, 3]},
        "focal-g1": {"loss": {"name": "focal", "gamma": 1.0}, "seeds": [1, 2, 3]},
        "focal-g2": {"name": "focal", "gamma": 2.0},
        "ce-viterbi": {"from": "ce", "decoding": "viterbi"}}))
    assert [r.name for r in study.runs()] == [
        "ce/seed-1", "focal-g1/seed-1", "focal-g2/seed-1", "ce/seed-2", "focal-g1/seed-2",
        "focal-g2/seed-2", "ce/seed-3", "focal-g1/seed-3"]
    assert study.seeds_of("ce-viterbi") == [1, 2, 3] and study.seeds_of("focal-g2") == [1, 2]
    # the seeds are not part of the run's training config
    assert study.runs()[0].config["loss"] == {"name": "ce"}
    assert study.runs()[1].config["loss"] == {"name": "focal", "gamma": 1.0}
    for losses, match in (
            ({"ce": {"name": "ce", "seeds": [1, 1]}}, r"losses\.ce\.seeds: expected a list"),
            ({"ce": {"name": "ce"}, "v": {"from": "ce", "decoding": "viterbi", "seeds": [3]}},
             r"losses\.v\.seeds: a derived variant has the seeds of 'ce'")):
        with pytest.raises(ConfigError, match=match):
            load_study(_write_study(tmp_path, losses=losses))


@pytest.mark.parametrize("losses, match", [
    ({"ce": {"name": "ce"}, "bad": {"name": "focal", "gama": 1}}, r"loss 'bad': .*loss\.gama"),
    ({"ce": {"name": "ce"}, "w": {"name": "ce", "class_weight": "log"}}, r"class_weight"),
    ({"focal": {"name": "focal"}}, r"baseline 'ce' is not one of the losses"),
])
def test_bad_study_config(tmp_path, losses, match):
    with pytest.raises(ConfigError, match=match):
        load_study(_write_study(tmp_path, losses=losses))


def test_a_training_config_given_to_study_says_what_a_study_config_holds(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("task: ner\ndata: {dataset: conll2003}\n")
    with pytest.raises(ConfigError, match=r"train\.yaml: expected a mapping under 'study': a study "
                                          r"config has study, base and losses"):
        load_study(path)


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


def test_a_run_finished_while_the_grid_runs_is_kept(tmp_path):
    """A run that finishes after the grid listed its work (another process, a run copied in)
    is neither deleted nor trained again when the grid reaches it."""
    study = load_study(_write_study(tmp_path))
    trained = []

    def fake(run: Run):
        if not trained:  # while the first run trains, the last one is finished elsewhere
            last.directory.mkdir(parents=True)
            (last.directory / "metrics.json").write_text('{"elsewhere": true}')
        trained.append(run.name)
        run.directory.mkdir(parents=True)
        (run.directory / "metrics.json").write_text("{}")

    names = [r.name for r in study.runs()]
    last = study.runs()[-1]
    done = run_grid(study, progress=False, runner=fake)
    assert trained == [r.name for r in done] == names[:-1]
    assert json.loads((last.directory / "metrics.json").read_text()) == {"elsewhere": True}


def test_processes_sharing_a_grid_claim_their_runs(tmp_path):
    """A run another live process has claimed is skipped; a claim whose process has ended is
    taken over; claims go when the run ends, trained or failed."""
    import socket
    import subprocess
    import sys

    study = load_study(_write_study(tmp_path))
    runs = study.runs()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claims = [r.directory.with_name(r.directory.name + ".claim") for r in runs]
    claims[0].parent.mkdir(parents=True)
    claims[0].write_text(f"{socket.gethostname()} {os.getppid()}\n")   # alive: another process
    claims[1].parent.mkdir(parents=True, exist_ok=True)
    claims[1].write_text(f"{socket.gethostname()} {dead.pid}\n")       # its process has ended
    claims[2].parent.mkdir(parents=True, exist_ok=True)
    claims[2].write_text("elsewhere.example 1\n")                      # another machine's
    trained = []

    def fake(run: Run):
        me = run.directory.with_name(run.directory.name + ".claim").read_text().split()
        assert me == [socket.gethostname(), str(os.getpid())]   # held while it trains
        trained.append(run.name)
        run.directory.mkdir(parents=True)
        (run.directory / "metrics.json").write_text("{}")

    done = run_grid(study, progress=False, runner=fake)
    assert trained == [r.name for r in done] == [runs[1].name, *[r.name for r in runs[3:]]]
    assert claims[0].exists() and claims[2].exists()          # not ours: left alone
    assert not any(c.exists() for c in [claims[1], *claims[3:]])

    claims[0].unlink()

    def failing(run: Run):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        run_grid(study, progress=False, runner=failing)
    assert not claims[0].exists()


def test_an_interrupted_run_is_continued_from_its_checkpoint(tmp_path, capsys):
    """A run left with a complete checkpoint of the same config is continued (the runner gets
    the run with train.resume=auto and its .incomplete directory untouched); one of another
    config, one that diverged, or one with no complete checkpoint is trained afresh."""
    from seqlab.assemble import config_from_dict

    study = load_study(_write_study(tmp_path))
    runs = study.runs()

    def leave(run: Run, *, config: dict, checkpoint: str = "step-3", diverged: bool = False):
        staging = run.directory.with_name(run.directory.name + ".incomplete")
        (staging / "checkpoints" / checkpoint).mkdir(parents=True)
        if not checkpoint.startswith("."):
            (staging / "checkpoints" / checkpoint / "trainer_state.json").write_text("{}")
        (staging / "config.yaml").write_text(yaml.safe_dump(config_from_dict(config).to_dict()))
        if diverged:
            (staging / "diverged.json").write_text("{}")

    leave(runs[0], config=runs[0].config)                                   # continued
    leave(runs[1], config=apply_overrides(runs[1].config, ["train.epochs=3"]))  # longer: continued
    leave(runs[2], config=apply_overrides(runs[2].config, ["train.learning_rate=0.1"]))
    leave(runs[3], config=runs[3].config, diverged=True)
    leave(runs[4], config=runs[4].config, checkpoint=".step-3.tmp")         # never completed
    seen = {}

    def fake(run: Run):
        staging = run.directory.with_name(run.directory.name + ".incomplete")
        seen[run.name] = (run.config["train"].get("resume"), staging.exists())
        run.directory.mkdir(parents=True)
        (run.directory / "metrics.json").write_text("{}")

    run_grid(study, progress=False, runner=fake)
    assert seen[runs[0].name] == seen[runs[1].name] == ("auto", True)
    for r in runs[2:5]:
        assert seen[r.name] == (None, False), r.name
    err = capsys.readouterr().err
    assert f"{runs[0].name}: continuing the interrupted run from step-3" in err
    assert f"{runs[2].name}: the interrupted run in" in err and "train.learning_rate" in err


def test_a_killed_grid_run_continues_to_the_same_result(tmp_path, fixtures, tiny_encoder,
                                                         monkeypatch, capsys):
    """A grid run killed after its first epoch's checkpoint is continued by the next call of
    the grid, to the metrics of a run never stopped."""
    base = {"task": "ner",
            "data": {"train_file": str(fixtures / "train.conll"),
                     "dev_file": str(fixtures / "dev.conll"),
                     "test_file": str(fixtures / "test.conll")},
            "model": {"encoder": str(tiny_encoder), "max_length": 24},
            "train": {"epochs": 2, "batch_size": 4, "learning_rate": 2e-3, "warmup_ratio": 0}}
    for d in ("whole", "cut"):
        (tmp_path / d).mkdir()
    whole = load_study(_write_study(tmp_path / "whole", seeds=(1,), base=base,
                                    losses={"ce": {"name": "ce"}}))
    cut = load_study(_write_study(tmp_path / "cut", seeds=(1,), base=base,
                                  losses={"ce": {"name": "ce"}}))
    run_grid(whole, progress=False)
    steps = json.loads((whole.runs()[0].directory / "metrics.json").read_text())["steps"]
    monkeypatch.setenv("SEQLAB_CRASH_AT", f"step-{steps // 2 + 1}")   # in the second epoch
    with pytest.raises(SeqlabError, match="ce/seed-1 failed"):
        run_grid(cut, progress=False)
    run = cut.runs()[0]
    staging = run.directory.with_name(run.directory.name + ".incomplete")
    assert (staging / "checkpoints" / f"step-{steps // 2}").is_dir()
    assert not run.directory.with_name("seed-1.claim").exists()
    monkeypatch.delenv("SEQLAB_CRASH_AT")
    capsys.readouterr()
    assert [r.name for r in run_grid(cut, progress=False)] == ["ce/seed-1"]
    assert f"continuing the interrupted run from step-{steps // 2}" in capsys.readouterr().err
    a = json.loads((whole.runs()[0].directory / "metrics.json").read_text())
    b = json.loads((run.directory / "metrics.json").read_text())
    assert b["steps"] == a["steps"] and b["best_epoch"] == a["best_epoch"]
    assert b["loss_history"] == pytest.approx(a["loss_history"], rel=1e-5, abs=1e-6)
    for key in ("f1", "precision", "recall"):
        assert b["test"]["default"][key] == pytest.approx(a["test"]["default"][key])
    assert b["data_order"] == a["data_order"]
    assert b["initial_encoder_weights"] == a["initial_encoder_weights"]


def test_sigterm_ends_the_grid_and_its_run_cleanly(tmp_path):
    """SIGTERM to a grid process kills the run it is training and removes the run's claim;
    the process exits with 143, the usual status for SIGTERM."""
    import signal
    import subprocess
    import sys
    import time

    path = _write_study(tmp_path)
    child_pid = tmp_path / "child.pid"
    script = tmp_path / "grid.py"
    script.write_text(f"""
import subprocess, sys
from seqlab.study import load_study, run_grid

def slow(run):   # a run's process that takes long, as `seqlab train` does
    subprocess.run([sys.executable, "-c", "import os, time; "
                    "open({str(child_pid)!r}, 'w').write(str(os.getpid())); time.sleep(120)"])

run_grid(load_study({str(path)!r}), progress=False, runner=slow)
""")
    proc = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (child_pid.exists() and child_pid.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = int(child_pid.read_text())
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert not list((tmp_path / "out").rglob("*.claim"))
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):   # the run's process went with it
        os.kill(pid, 0)


def test_a_finished_run_of_another_config_is_refused(tmp_path):
    """Editing a grid's budget in place must not mix runs of two budgets: running and
    reporting refuse, naming the run, the key and both values; where the run was written and
    keys only one side knows do not count."""
    path = _write_study(tmp_path)
    study = load_study(path)
    run = study.runs()[1]
    run.directory.mkdir(parents=True)
    (run.directory / "metrics.json").write_text("{}")
    saved = {**run.config, "train": {**run.config["train"], "output_dir": "elsewhere/seed-1"},
             "qa": {"doc_stride": 128}}          # another place, a key from another version
    (run.directory / "config.yaml").write_text(yaml.safe_dump(saved))
    trained = []
    run_grid(study, progress=False, runner=lambda r: trained.append(r.name))
    assert run.name not in trained                # the same config: kept

    saved["train"]["epochs"] = 5
    (run.directory / "config.yaml").write_text(yaml.safe_dump(saved))
    for call in (lambda: run_grid(study, progress=False, runner=lambda r: None),
                 lambda: aggregate(study)):
        with pytest.raises(ConfigError, match=r"focal-g2/seed-1/config.yaml: .*train\.epochs 5 "
                                              r"\(the study says 1\.0\).*move the run away"):
            call()


def test_ece_against_a_hand_computation():
    # 15 bins; confidences 0.95 (bin 14), 0.95, 0.50 (bin 7), 0.10 (bin 1)
    conf = [0.95, 0.95, 0.50, 0.10]
    ok = [True, False, True, False]
    hand = (2 / 4) * abs(0.5 - 0.95) + (1 / 4) * abs(1.0 - 0.5) + (1 / 4) * abs(0.0 - 0.1)
    assert stats.expected_calibration_error(conf, ok) == pytest.approx(hand)
    assert stats.expected_calibration_error([1.0], [True]) == pytest.approx(0.0)  # the last bin
    assert stats.expected_calibration_error([], []) is None


def test_paired_tests_match_scipy():
    a, b = [0.81, 0.79, 0.84, 0.80, 0.83, 0.82], [0.80, 0.80, 0.81, 0.78, 0.80, 0.79]
    out = stats.paired_tests(a, b)
    assert out["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert out["t_test_p"] == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue)
    assert out["wilcoxon_p"] == pytest.approx(scipy_stats.wilcoxon(a, b).pvalue)
    assert out["wins"] == 5
    assert out["sign_test_p"] == pytest.approx(scipy_stats.binomtest(5, 6).pvalue)
    # below 6 pairs the Wilcoxon test cannot reach 0.05: not given, its floor said instead
    few = stats.paired_tests(a[:3], b[:3])
    assert few["wilcoxon_p"] is None and few["wilcoxon_min_p"] == 0.25
    assert scipy_stats.wilcoxon([1, 2, 3], [0, 0, 0]).pvalue == pytest.approx(0.25)
    assert stats.paired_tests([0.5, 0.6], [0.5, 0.6])["t_test_p"] is None


def test_holm_against_a_direct_computation():
    p = [0.01, 0.04, None, 0.03, 0.20]
    # sorted 0.01, 0.03, 0.04, 0.20 (m = 4): 0.04, 0.09, 0.09 (monotone), 0.20
    assert stats.holm(p) == pytest.approx([0.04, 0.09, None, 0.09, 0.20])
    assert stats.holm([0.5, 0.6]) == [1.0, 1.0]
    assert stats.holm([]) == []


def _naive_bootstrap(a, b, score, docs, resamples, seed):
    """The two-level bootstrap written as loops over resamples, seeds and documents."""
    rng = np.random.default_rng(seed)
    doc_ids = list(dict.fromkeys(docs))
    n_docs, n_seeds = len(doc_ids), a.shape[0]
    values = []
    for _ in range(resamples):
        weights = rng.multinomial(n_docs, np.full(n_docs, 1.0 / n_docs), size=1)[0]
        drawn = rng.integers(0, n_seeds, size=(1, n_seeds))[0]
        diffs = []
        for s in drawn:
            sa, sb = np.zeros(a.shape[-1]), np.zeros(a.shape[-1])
            for d, w in zip(doc_ids, weights):
                for u in range(a.shape[1]):
                    if docs[u] == d:
                        sa += w * a[s, u]
                        sb += w * b[s, u]
            diffs.append(score(sa) - score(sb))
        values.append(np.mean(diffs))
    return np.asarray(values)


def _entity_f1(c):
    return NerTask.study_scores()["f1"](c)


def _synthetic(rng, seeds, units, effect, seed_sd=0.02):
    """Per seed and sentence (true positives, predicted, gold) of two systems whose recall
    differs by ``effect`` (a seed effect of sd ``seed_sd`` and a sentence difficulty shared by
    both)."""
    gold = rng.integers(1, 4, units)
    hard = rng.random(units)
    counts = []
    for shift in (effect, 0.0):
        per_seed = []
        for _ in range(seeds):
            p = np.clip(0.7 + shift + rng.normal(0, seed_sd) - 0.3 * hard, 0, 1)
            tp = rng.binomial(gold, p)
            per_seed.append(np.stack([tp, gold, gold], 1))
        counts.append(np.stack(per_seed))
    return counts


def test_two_level_bootstrap_equals_the_direct_computation():
    rng = np.random.default_rng(0)
    a, b = _synthetic(rng, seeds=3, units=12, effect=0.05)
    docs = [u // 3 for u in range(12)]  # 4 documents of 3 sentences
    out = stats.two_level_bootstrap(a, b, _entity_f1, documents=docs, resamples=300, seed=7,
                                    chunk=1)
    naive = _naive_bootstrap(a, b, _entity_f1, docs, 300, 7)
    low, high = np.percentile(naive, [2.5, 97.5])
    assert out["ci_low"] == pytest.approx(low) and out["ci_high"] == pytest.approx(high)
    assert out["p_value"] == pytest.approx(stats.percentile_p(naive))
    # the observed statistic is the mean over seeds of the paired difference
    direct = np.mean([_entity_f1(a[s].sum(0)) - _entity_f1(b[s].sum(0)) for s in range(3)])
    assert out["diff"] == pytest.approx(direct)
    # documents are the resampled units: with one document per sentence it is a sentence bootstrap
    per_sentence = stats.two_level_bootstrap(a, b, _entity_f1, resamples=300, seed=7, chunk=1)
    assert per_sentence["documents"] == 12 and out["documents"] == 4


def test_the_percentile_interval_agrees_with_scipy_on_one_seed():
    rng = np.random.default_rng(5)
    a, b = _synthetic(rng, seeds=1, units=300, effect=0.05)
    out = stats.two_level_bootstrap(a, b, _entity_f1, resamples=4000, seed=1)
    units = np.arange(a.shape[1])  # scipy resamples the sentences' indices
    res = scipy_stats.bootstrap((units,), lambda i: _entity_f1(a[0][i].sum(0)) -
                                _entity_f1(b[0][i].sum(0)), vectorized=False, n_resamples=4000,
                                method="percentile", random_state=np.random.default_rng(2))
    width = out["ci_high"] - out["ci_low"]
    assert abs(res.confidence_interval.low - out["ci_low"]) < 0.1 * width
    assert abs(res.confidence_interval.high - out["ci_high"]) < 0.1 * width


def test_null_and_known_effect_on_synthetic_grids():
    """Over repeated synthetic grids with no difference the 95% interval covers 0 about 95% of
    the time; with a known effect it covers the effect and the test finds it."""
    rng = np.random.default_rng(11)
    covered = found = 0
    draws = 120
    for _ in range(draws):
        a, b = _synthetic(rng, seeds=5, units=200, effect=0.0)
        out = stats.two_level_bootstrap(a, b, _entity_f1, resamples=400,
                                        seed=int(rng.integers(1 << 30)))
        covered += out["ci_low"] <= 0 <= out["ci_high"]
    assert covered / draws >= 0.90
    for _ in range(10):
        a, b = _synthetic(rng, seeds=5, units=200, effect=0.08)
        out = stats.two_level_bootstrap(a, b, _entity_f1, resamples=400, seed=3)
        seed_p = stats.paired_tests(_entity_f1(a.sum(1)), _entity_f1(b.sum(1)))["t_test_p"]
        found += (out["p_value"] < 0.05 and out["ci_low"] > 0
                  and stats.verdict(out, out["p_value"], 1.0, seed_p=seed_p, seed_tost=1.0)
                  == "better")
    assert found >= 9


def test_the_verdict_rule_keeps_its_level_where_the_seed_dominates():
    """Two seeds that move recall by 10 points: the bootstrap alone rejects a true null far
    more than 5% of the time (its seed level has no small-sample correction); the verdict
    rule, which asks the paired t-test over seeds too, stays near 5%."""
    rng = np.random.default_rng(3)
    draws, boot, rule = 150, 0, 0
    for _ in range(draws):
        a, b = _synthetic(rng, seeds=2, units=200, effect=0.0, seed_sd=0.10)
        out = stats.two_level_bootstrap(a, b, _entity_f1, resamples=300,
                                        seed=int(rng.integers(1 << 30)))
        seed_p = stats.paired_tests(_entity_f1(a.sum(1)), _entity_f1(b.sum(1)))["t_test_p"]
        boot += out["p_value"] < 0.05
        rule += stats.verdict(out, out["p_value"], 1.0, seed_p=seed_p, seed_tost=1.0,
                              seeds=2) in ("better", "worse")
    assert boot / draws > 0.12
    assert rule / draws <= 0.10


def test_equivalence_and_verdicts():
    tight = np.random.default_rng(0).normal(0.001, 0.001, 2000)
    assert stats.tost_p(tight, 0.005) < 0.05          # well inside ±0.5 points
    assert stats.tost_p(tight + 0.006, 0.005) > 0.5    # outside
    b = {"diff": 0.01}
    both = {"seed_p": 0.01, "seed_tost": 0.01}
    assert stats.verdict(b, 0.01, 0.9, **both) == "better"
    assert stats.verdict({"diff": -0.01}, 0.01, 0.9, **both) == "worse"
    assert stats.verdict(b, 0.2, 0.01, **both) == "no detectable difference"
    assert stats.verdict(b, 0.2, 0.2, **both) == "inconclusive"
    # the bootstrap alone is not enough: the seeds must back it, in both directions
    assert stats.verdict(b, 0.01, 0.9, seed_p=0.2, seed_tost=0.01) == "inconclusive"
    assert stats.verdict(b, 0.2, 0.01, seed_p=0.2, seed_tost=0.3) == "inconclusive"
    assert stats.verdict(b, 0.01, 0.9, seed_p=None, seed_tost=None) == "inconclusive"
    # one paired seed: the interval is conditional on one trained model, so no verdict
    assert stats.verdict(b, 0.01, 0.9, seeds=1, **both) == "one seed: no verdict"
    assert stats.verdict(b, 0.01, 0.9, seeds=2, **both) == "better"


def test_seed_level_equivalence_against_scipy():
    d = np.array([0.002, -0.001, 0.003, 0.0, 0.001])
    m = 0.005
    n, mean, se = d.size, d.mean(), d.std(ddof=1) / np.sqrt(d.size)
    direct = max(scipy_stats.t.sf((mean + m) / se, n - 1), scipy_stats.t.cdf((mean - m) / se, n - 1))
    assert stats.t_tost_p(d, m) == pytest.approx(direct)
    assert stats.t_tost_p(d, m) < 0.05
    assert stats.t_tost_p(d + 0.004, m) > 0.05                  # its interval reaches the margin
    assert stats.t_tost_p([0.001, 0.001], m) == 0.0             # no spread, inside
    assert stats.t_tost_p([0.006, 0.006], m) == 1.0             # no spread, outside
    assert stats.t_tost_p([0.001], m) is None
    out = stats.paired_tests([0.80, 0.81, 0.79], [0.80, 0.80, 0.80], margin=m)
    assert out["t_tost_p"] == pytest.approx(stats.t_tost_p([0.0, 0.01, -0.01], m))
    assert "t_tost_p" not in stats.paired_tests([0.8, 0.81], [0.8, 0.8])


def test_a_seed_spread_the_bootstrap_misses_gives_no_verdict(tmp_path):
    """Every seed lower, but by 4 to 40 points: the two-level bootstrap over 2 seeds calls it,
    the paired t-test over seeds does not, and so the verdict is inconclusive."""
    good = [(["B-PER", "O"], ["B-PER", "O"], [0.9, 0.8])] * 40
    f1 = {"ce": [0.60, 0.70], "a": [0.20, 0.66]}
    fewer = [(["B-PER", "O"], ["B-PER" if i % 5 else "O", "O"], [0.9, 0.8]) for i in range(40)]
    study = _fake_grid(tmp_path, f1, {"ce": good, "a": fewer}, seeds=(1, 2))
    res = aggregate(study, resamples=400)
    cmp_ = res["losses"]["a"]["vs_baseline"]
    assert cmp_["bootstrap"]["f1"]["p_value_holm"] < 0.05
    assert cmp_["test_f1"]["t_test_p_holm"] > 0.05
    assert cmp_["verdict"] == "inconclusive"


def _fake_run(directory: Path, f1s: dict, sentences: list[tuple[list[str], list[str], list[float]]],
              order: str = "same"):
    directory.mkdir(parents=True)
    metrics = {"train_time_s": 10.0, "train_tokens_per_s": 100.0, "best_epoch": 1,
               "data_order": order, "initial_weights": "w0", "epochs_run": 3}
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


def _fake_grid(tmp_path, f1, sents, seeds=(1, 2, 3)):
    study = load_study(_write_study(tmp_path, seeds=seeds,
                                    losses={k: {"name": "focal" if k != "ce" else "ce"}
                                            for k in f1}))
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / "documents_test.json").write_text("null")  # no documents: sentences
    for run in study.runs():
        _fake_run(run.directory, {"dev": f1[run.loss][run.seed - 1] + 0.1,
                                  "test": f1[run.loss][run.seed - 1]}, sents[run.loss])
    return study


def test_aggregation_on_fixture_metrics(tmp_path):
    sents_ce = [(["B-PER", "I-PER", "O"], ["B-PER", "I-PER", "O"], [0.9, 0.8, 0.7]),
                (["B-LOC", "O"], ["O", "O"], [0.6, 0.9])]
    sents_focal = [(["B-PER", "I-PER", "O"], ["B-PER", "I-PER", "O"], [0.9, 0.8, 0.7]),
                   (["B-LOC", "O"], ["B-LOC", "O"], [0.6, 0.9])]
    f1 = {"ce": [0.70, 0.72, 0.71], "focal": [0.74, 0.73, 0.77]}
    study = _fake_grid(tmp_path, f1, {"ce": sents_ce, "focal": sents_focal})
    res = aggregate(study, resamples=200)
    assert res["scored_split"] == "test" and res["bootstrap"]["resamples"] == 200
    focal = res["losses"]["focal"]
    assert focal["test"]["f1"]["mean"] == pytest.approx(np.mean(f1["focal"]))
    assert focal["test"]["f1"]["std"] == pytest.approx(np.std(f1["focal"], ddof=1))
    cmp_ = focal["vs_baseline"]
    t = scipy_stats.ttest_rel(f1["focal"], f1["ce"]).pvalue
    assert cmp_["test_f1"]["t_test_p"] == pytest.approx(t)
    assert cmp_["test_f1"]["t_test_p_holm"] == pytest.approx(t)  # one comparison: unadjusted
    assert cmp_["test_f1"]["wilcoxon_p"] is None  # 3 pairs
    # ce finds 1 of 2 entities per seed (F1 2/3), focal both (F1 1)
    assert cmp_["bootstrap"]["f1"]["diff"] == pytest.approx(1 - 2 / 3)
    assert res["rarest_type"] == "LOC"
    assert cmp_["rare_f1"]["mean_diff"] == pytest.approx(np.mean(np.subtract(f1["focal"], f1["ce"])) / 2)
    assert focal["ece_all"]["mean"] is not None and "ece_entity" in cmp_
    json.dumps(res, allow_nan=False)  # strict JSON


def test_holm_runs_across_the_variants_of_a_grid(tmp_path):
    good = [(["B-PER", "O"], ["B-PER", "O"], [0.9, 0.8])] * 20
    bad = [(["B-PER", "O"], ["O", "O"], [0.9, 0.8])] * 20
    f1 = {"ce": [0.5, 0.5, 0.5], "a": [0.6, 0.61, 0.62], "b": [0.55, 0.5, 0.56]}
    study = _fake_grid(tmp_path, f1, {"ce": bad, "a": good, "b": good})
    res = aggregate(study, resamples=200)
    pa = res["losses"]["a"]["vs_baseline"]["test_f1"]
    pb = res["losses"]["b"]["vs_baseline"]["test_f1"]
    assert [pa["t_test_p_holm"], pb["t_test_p_holm"]] == pytest.approx(
        stats.holm([pa["t_test_p"], pb["t_test_p"]]))
    assert res["losses"]["a"]["vs_baseline"]["verdict"] == "better"


def test_sentence_counts_reproduce_seqeval():
    from seqeval.metrics import f1_score

    from seqlab.metrics import sentence_counts

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"], ["I-MISC", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG", "O"], ["I-MISC", "B-LOC"]]
    tp, n_pred, n_gold = sentence_counts(gold, pred).sum(0)
    assert 2 * tp / (n_pred + n_gold) == pytest.approx(f1_score(gold, pred))


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path, fixtures, tiny_encoder, capsys):
    base = {"task": "ner",
            "data": {"train_file": str(fixtures / "train.conll"), "dev_file": str(fixtures / "dev.conll"),
                     "test_file": str(fixtures / "test.conll")},
            "model": {"encoder": str(tiny_encoder), "max_length": 24},
            "train": {"epochs": 2, "batch_size": 4, "learning_rate": 2e-3, "warmup_ratio": 0}}
    argmax = {"loss": {"name": "ce"}, "eval": {"decode": "argmax"}}  # viterbi beside it
    # "ce" and "ce-again" are the same loss: with paired seeds they must give identical runs;
    # "ce-viterbi" reads ce's runs decoded otherwise; "crf" changes the head
    path = _write_study(tmp_path, seeds=(1, 2), base=base,
                        losses={"ce": argmax, "ce-again": argmax,
                                "crf": {"model": {"head": "crf"}, "loss": {"name": "crf"}},
                                "ce-viterbi": {"from": "ce", "decoding": "viterbi"}})
    assert main(["study", str(path), "--no-progress"]) == 0
    out = tmp_path / "out"
    res = json.loads((out / "results.json").read_text())
    assert list(res["losses"]) == ["ce", "ce-again", "crf", "ce-viterbi"]
    again = res["losses"]["ce-again"]
    assert again["vs_baseline"]["test_f1"]["mean_diff"] == 0.0
    assert again["vs_baseline"]["bootstrap"]["f1"]["diff"] == 0.0
    assert again["test"]["f1"]["values"] == res["losses"]["ce"]["test"]["f1"]["values"]
    # another head: paired by the encoder's initial weights and the data order
    assert res["losses"]["crf"]["vs_baseline"]["test_f1"]["pairs"] == 2
    assert res["losses"]["ce-viterbi"]["seeds"] == [1, 2]
    run = out / "runs" / "crf" / "seed-2"
    assert (run / "metrics.json").is_file() and (run / "predictions_test.conll.gz").is_file()
    assert not (run / "model.safetensors").exists()
    assert (out / "runs" / "ce" / "seed-1" / "predictions_test.viterbi.conll.gz").is_file()
    # the derived decoding's per-type F1 is read from its own predictions, by seqeval; the same
    # reading of the trained decoding's file gives its metrics.json figures
    from seqlab.metrics import entity_scores
    for seed in (1, 2):
        ce_run = out / "runs" / "ce" / f"seed-{seed}"
        gold, pred, _ = read_predictions(ce_run / "predictions_test.viterbi.conll.gz")
        want = {t: v["f1"] for t, v in entity_scores(gold, pred)["per_type"].items()}
        viterbi = next(r for r in res["losses"]["ce-viterbi"]["runs"] if r["seed"] == seed)
        assert viterbi["test"]["per_type"] == pytest.approx(want) and want
        recorded = json.loads((ce_run / "metrics.json").read_text())["test"]["default"]["per_type"]
        gold, pred, _ = read_predictions(ce_run / "predictions_test.conll.gz")
        assert {t: v["f1"] for t, v in entity_scores(gold, pred)["per_type"].items()} == \
            pytest.approx({t: v["f1"] for t, v in recorded.items()})
    assert set(res["losses"]["ce-viterbi"]["test"]["per_type_f1"]) == set(want)
    assert "rare_f1" in res["losses"]["ce-viterbi"]["vs_baseline"]
    gold, pred, prob = read_predictions(run / "predictions_test.conll.gz")
    assert all(0.0 <= q <= 1.0 for s in prob for q in s) and len(gold) == len(pred)
    for name in ("report.md", "f1_by_loss.png", "delta_f1.svg", "precision_recall.png"):
        assert (out / name).is_file(), name
    assert "| ce-again | 2 | " in (out / "report.md").read_text()
    printed = capsys.readouterr().out  # the headline table, then where the report is
    assert "| ce-again | 2 | " in printed and "| +0.00 | 0/2 " in printed
    assert printed.rstrip().endswith(f"6 of 6 runs finished; report in {out / 'report.md'}")
    # a second call trains nothing and reports again
    mtime = (run / "metrics.json").stat().st_mtime
    assert main(["study", str(path), "--no-progress"]) == 0
    assert (run / "metrics.json").stat().st_mtime == mtime


@pytest.mark.slow
def test_a_qa_study_bootstraps_questions_by_article(tmp_path, tiny_encoder):
    import random

    rng = random.Random(0)
    words = "the a lamp light river stone bird cloud".split()
    data = []
    for art in range(3):
        paras = []
        for q in range(4):
            ctx = " ".join(rng.choice(words) for _ in range(20)) + " answer here ."
            paras.append({"context": ctx, "qas": [{"id": f"{art}-{q}", "question": "where ?",
                          "answers": [{"text": "answer here", "answer_start": ctx.index("answer")}]}]})
        data.append({"title": f"article {art}", "paragraphs": paras})
    squad = tmp_path / "qa.json"
    squad.write_text(json.dumps({"data": data}))
    base = {"task": "qa", "data": {"train_file": str(squad), "dev_file": str(squad)},
            "model": {"encoder": str(tiny_encoder), "max_length": 48, "head": "tagging"},
            "qa": {"doc_stride": 16, "max_query_length": 8},
            "train": {"epochs": 2, "batch_size": 4, "learning_rate": 3e-3, "warmup_ratio": 0}}
    path = _write_study(tmp_path, seeds=(1, 2), base=base,
                        losses={"ce": {"name": "ce"}, "focal-g1": {"name": "focal", "gamma": 1.0},
                                "pointer": {"model": {"head": "pointer"}, "loss": {"name": "ce"}}})
    assert main(["study", str(path), "--no-progress"]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["task"] == "qa" and res["scored_split"] == "dev"
    assert res["bootstrap"]["units"] == "documents" and res["bootstrap"]["documents"] == 3
    f1 = res["losses"]["focal-g1"]["vs_baseline"]["bootstrap"]["f1"]
    means = [r["dev"]["f1"] for r in res["losses"]["focal-g1"]["runs"]]
    base_means = [r["dev"]["f1"] for r in res["losses"]["ce"]["runs"]]
    assert f1["diff"] == pytest.approx(np.mean(np.subtract(means, base_means)))
    assert (tmp_path / "out" / "runs" / "ce" / "seed-1" / "predictions_dev.jsonl.gz").is_file()
    # dev both keeps the best epoch and is scored: the report says where that chose anything
    chosen = res["epoch_chosen_on_scored_split"]
    assert chosen["runs"] == 6
    earlier = [(r["seed"], n) for n, e in res["losses"].items() for r in e["runs"]
               if r["best_epoch"] != r["epochs_run"]]
    assert sorted((e["seed"], e["variant"]) for e in chosen["kept_an_earlier_epoch"]) == sorted(earlier)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "the split scored here" in report
    from seqlab.study.report import markdown
    res["epoch_chosen_on_scored_split"]["kept_an_earlier_epoch"] = [
        {"variant": "ce", "seed": 2, "best_epoch": 1, "epochs_run": 2}]
    assert "1 of 6 runs kept an earlier epoch than their last (`ce` seed 2: epoch 1 of 2)" \
        in markdown(res)


def test_runs_that_did_not_start_alike_are_not_paired(tmp_path):
    study = load_study(_write_study(tmp_path, seeds=(1, 2, 3),
                                    losses={"ce": {"name": "ce"}, "focal": {"name": "focal"}}))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "documents_test.json").write_text("null")
    sents = [(["B-PER", "O"], ["B-PER", "O"], [0.9, 0.8])]
    for run in study.runs():
        order = "other" if (run.loss, run.seed) == ("focal", 2) else "same"
        _fake_run(run.directory, {"test": 0.5 + 0.01 * run.seed}, sents, order=order)
    cmp_ = aggregate(study, resamples=50)["losses"]["focal"]["vs_baseline"]
    assert cmp_["unpaired_seeds"] == [2] and cmp_["test_f1"]["pairs"] == 2
    assert cmp_["bootstrap"]["f1"]["seed_list"] == [1, 3]


def _fixture_study(tmp_path: Path, name: str, f1: dict) -> Path:
    """A study under ``tmp_path/studies/<name>`` with fake runs of the given test F1s, reported."""
    root = tmp_path / "studies"
    path = tmp_path / f"study-{name}.yaml"
    path.write_text(yaml.safe_dump({
        "study": {"output_dir": str(root / name), "seeds": [1, 2, 3], "baseline": "ce"},
        "base": {"task": "ner", "data": {"dataset": "conll2003"}, "train": {"epochs": 1}},
        "losses": {k: {"name": "focal" if k != "ce" else "ce"} for k in f1}}))
    study = load_study(path)
    (root / name).mkdir(parents=True)
    (root / name / "documents_test.json").write_text("null")
    good = [(["B-PER", "O"], ["B-PER", "O"], [0.9, 0.8])] * 10
    bad = [(["B-PER", "O"], ["O", "O"], [0.9, 0.8])] * 10
    for run in study.runs():
        _fake_run(run.directory, {"test": f1[run.loss][run.seed - 1]},
                  good if run.loss != "ce" else bad)
    report(study, resamples=300)
    return root


def test_summary_sets_the_studies_side_by_side(tmp_path):
    _fixture_study(tmp_path, "a", {"ce": [0.70, 0.72, 0.71], "focal": [0.74, 0.73, 0.70],
                                   "other": [0.70, 0.72, 0.71]})
    root = _fixture_study(tmp_path, "b", {"ce": [0.50, 0.52, 0.51], "focal": [0.48, 0.51, 0.49]})
    assert main(["study-summary", str(root)]) == 0
    text = (root / "summary.md").read_text()
    # a: +1.33 points, higher in 2 of 3 seeds; the bootstrap (focal finds every entity, ce none)
    # says better after Holm, but the seeds (+4, +1, -1) do not back it: plain. b: -1.67, lower
    # in 0 of 3 by 1-2 points (t-test p 0.038): bold. The mean over the two grids is given for
    # the variants that ran on both; "other" ran on one grid only
    assert "## Grids with baseline `ce`" in text
    assert "| focal | +1.33 (2/3) | **-1.67** (0/3) |" in text
    assert "| other | **+0.00** (0/3) | - |" in text or "| other | +0.00 (0/3) | - |" in text
    assert "| ce | 71.00 ± 1.00 (F1) | 51.00 ± 1.00 (F1) |" in text
    assert "| a, b | focal -0.17 |" in text
    assert "## a" in text and "## b" in text
    for ext in ("png", "svg"):
        assert (root / f"summary_delta_f1.{ext}").stat().st_size > 0


def test_summary_of_a_partial_grid_says_so(tmp_path):
    root = _fixture_study(tmp_path, "a", {"ce": [0.70, 0.72, 0.71], "focal": [0.74, 0.73, 0.70]})
    (root / "a" / "runs" / "focal" / "seed-3" / "metrics.json").unlink()
    report(load_study(tmp_path / "study-a.yaml"), resamples=300)
    assert write_summary(root)[0]["finished_runs"] == 5
    text = (root / "summary.md").read_text()
    assert "| variant | a, 5 of 6 runs |" in text
    assert "| focal | +2.50 (2/2) |" in text and "Mean Δ" not in text  # seeds +4, +1: no verdict


def test_summary_keeps_baselines_apart_and_means_off_one_seed_grids(tmp_path):
    _fixture_study(tmp_path, "a", {"ce": [0.70, 0.72, 0.71], "focal": [0.74, 0.73, 0.70]})
    _fixture_study(tmp_path, "b", {"ce": [0.50, 0.52, 0.51], "focal": [0.48, 0.51, 0.49]})
    # c: a grid of one seed, d: a grid with another baseline
    root = _fixture_study(tmp_path, "c", {"ce": [0.60, 0.60, 0.60], "focal": [0.90, 0.90, 0.90]})
    res = json.loads((root / "c" / "results.json").read_text())
    for e in res["losses"].values():
        e["seeds"] = e["seeds"][:1]
    (root / "c" / "results.json").write_text(json.dumps(res))
    res["study"], res["baseline"] = "d", "focal"
    (root / "d").mkdir()
    (root / "d" / "results.json").write_text(json.dumps(res))
    text = summary_markdown(read_results(root))
    assert "## Grids with baseline `ce`" in text and "## Grids with baseline `focal`" in text
    ce_table = text.split("## Grids with baseline `ce`")[1].split("## ")[0]
    assert "| variant | a | b | c |" in ce_table and " d " not in ce_table
    # c's one seed stays out of the means: the only set is a and b
    assert "| a, b | focal -0.17 |" in text and "| a, b, c |" not in text


def test_summary_rows_follow_the_fullest_grid(tmp_path):
    # a comes first by name but ran two of b's three variants: the rows take b's order
    _fixture_study(tmp_path, "a", {"ce": [0.70, 0.72, 0.71], "other": [0.70, 0.72, 0.71]})
    root = _fixture_study(tmp_path, "b", {"ce": [0.50, 0.52, 0.51],
                                          "focal": [0.48, 0.51, 0.49],
                                          "other": [0.50, 0.52, 0.51]})
    table = summary_markdown(read_results(root)).split("| variant |")[1].split("\n\n")[0]
    rows = [line.split(" | ")[0].strip("| ") for line in table.splitlines()[2:]]
    assert rows == ["ce", "focal", "other"]


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
