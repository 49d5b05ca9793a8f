"""Runs that survive and scale: checkpoints and exact resume, the non-finite guard, exact gradient
accumulation, two processes against one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqlab.cli import main

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.slow  # every test here trains


def _args(fixtures: Path, encoder: Path, out: Path, *extra: str) -> list[str]:
    from conftest import train_args

    return train_args(encoder, out, *extra, train=fixtures / "train.conll",
                      dev=fixtures / "dev.conll", test=fixtures / "test.conll",
                      train__epochs=4, train__log_every=1)


def _subprocess(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seqlab.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, cwd=ROOT, timeout=300)


def _strict_json(text: str):
    def reject(name):
        raise ValueError(f"{name} in JSON")
    return json.loads(text, parse_constant=reject)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, fixtures, tiny_encoder):
    out = tmp_path_factory.mktemp("whole") / "run"
    assert main(_args(fixtures, tiny_encoder, out, "train.checkpoint_every=3")) == 0
    return out


def _same_run(a: Path, b: Path) -> None:
    ma = json.loads((a / "metrics.json").read_text())
    mb = json.loads((b / "metrics.json").read_text())
    assert ma["steps"] == mb["steps"] and ma["best_epoch"] == mb["best_epoch"]
    assert mb["loss_history"] == pytest.approx(ma["loss_history"], rel=1e-5, abs=1e-6)
    for split in ("dev", "test"):
        assert ma[split]["default"] == mb[split]["default"]
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("crash", ["step-7", "checkpoint-write-6"])
def test_killed_run_resumes_to_the_same_result(tmp_path, fixtures, tiny_encoder, uninterrupted,
                                               crash):
    out = tmp_path / "run"
    args = _args(fixtures, tiny_encoder, out, "train.checkpoint_every=3")
    first = _subprocess(args, SEQLAB_CRASH_AT=crash)
    assert first.returncode == -9, first.stderr[-2000:]
    staging = out.with_name("run.incomplete")
    saved = sorted(p.name for p in (staging / "checkpoints").iterdir())
    # every 3 steps and at the end of each epoch (5 steps), the newest 2 kept
    if crash == "step-7":
        assert saved == ["step-5", "step-6"]
    else:  # killed while writing step-6: only its temporary directory is left of it
        assert saved == [".step-6.tmp", "step-3", "step-5"]
    # without --resume nothing is deleted silently
    refused = _subprocess(args)
    assert refused.returncode == 2 and "holds an interrupted run" in refused.stderr
    assert "--resume" in refused.stderr and "Traceback" not in refused.stderr
    resumed = _subprocess([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    _same_run(uninterrupted, out)
    # the log has one line per logged step, as the uninterrupted run's
    steps = [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
             if r["event"] == "train"]
    ref = [r["step"] for r in map(json.loads, (uninterrupted / "metrics.jsonl").read_text()
                                  .splitlines()) if r["event"] == "train"]
    assert steps == ref


FINISH_STEPS = ["finish-predictions", "finish-model", "finish-metrics", "finish-checkpoints",
                "finish-best", "finish-old", "finish-rename"]


@pytest.mark.slow
@pytest.mark.parametrize("crash", FINISH_STEPS)
def test_a_run_killed_while_finishing_is_completed_not_retrained(tmp_path, fixtures, tiny_encoder,
                                                                 uninterrupted, crash):
    out = tmp_path / "run"
    args = _args(fixtures, tiny_encoder, out, "train.checkpoint_every=3")
    if crash == "finish-old":  # the step that moves a previous run aside
        out.mkdir()
        (out / "old-run.txt").write_text("a previous run")
        args.append("train.overwrite=true")
    first = _subprocess(args, SEQLAB_CRASH_AT=crash)
    assert first.returncode == -9, first.stderr[-2000:]
    staging = out.with_name("run.incomplete")
    if crash != "finish-rename":
        assert staging.is_dir()
        # a plain rerun neither deletes nor retrains it: it says how to finish it
        if "train.overwrite=true" not in args:
            refused = _subprocess(args)
            assert refused.returncode == 2 and "Traceback" not in refused.stderr
            assert "--resume" in refused.stderr and staging.is_dir()
    resumed = _subprocess([a for a in args if a != "train.overwrite=true"] + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not staging.exists() and not out.with_name("run.old").exists()
    assert "epoch 1:" not in resumed.stdout  # nothing was trained again
    _same_run(uninterrupted, out)


def test_fp32_evaluation_after_bf16_training_is_fp32(tmp_path, fixtures, tiny_encoder):
    """train.eval_precision=fp32: the dev probabilities written by training equal a separate
    float32 `seqlab evaluate`, word by word (and bf16 evaluation gives other ones)."""
    def probs(path):
        return [l.split()[-1] for l in path.read_text().splitlines() if l.strip()]

    runs = {}
    for precision in ("fp32", "same"):
        out = tmp_path / precision
        assert main(_args(fixtures, tiny_encoder, out, "train.bf16=true", "train.epochs=3",
                          f"train.eval_precision={precision}")) == 0
        runs[precision] = out
    for precision, flags in (("fp32", []), ("same", ["--bf16"])):
        out = runs[precision]
        evaluated = tmp_path / f"eval-{precision}.conll"
        assert main(["evaluate", str(out), "--file", str(fixtures / "dev.conll"), "--output",
                     str(evaluated), "--no-progress", *flags]) == 0
        assert probs(out / "predictions_dev.conll") == probs(evaluated)
    fp32_eval = tmp_path / "fp32-of-bf16.conll"
    assert main(["evaluate", str(runs["same"]), "--file", str(fixtures / "dev.conll"), "--output",
                 str(fp32_eval), "--no-progress"]) == 0
    assert probs(runs["same"] / "predictions_dev.conll") != probs(fp32_eval)


def _finite_checkpoints(staging):
    from safetensors.torch import load_file

    for ckpt in (staging / "checkpoints").glob("step-*"):
        for name, t in load_file(str(ckpt / "model.safetensors")).items():
            assert torch.isfinite(t).all(), (ckpt.name, name)


def test_no_checkpoint_holds_infinite_weights(tmp_path, fixtures, tiny_encoder, capsys):
    # a learning rate that makes the weights infinite while the loss and gradients stay finite
    for mode in ("stop", "skip"):
        out = tmp_path / mode
        rc = main(_args(fixtures, tiny_encoder, out, "train.learning_rate=1e40",
                        "train.checkpoint_every=1", f"train.on_nonfinite={mode}"))
        err = capsys.readouterr().err
        assert rc == 3, err[-500:]
        assert "are not finite" in err and "Traceback" not in err
        assert not out.exists()
        _finite_checkpoints(out.with_name(f"{mode}.incomplete"))


def test_a_diverged_run_resumes_with_a_lower_learning_rate(tmp_path, fixtures, tiny_encoder):
    out = tmp_path / "run"
    # warm-up: the first step is taken at learning rate 0 and checkpointed, the second explodes
    args = _args(fixtures, tiny_encoder, out, "train.learning_rate=1e40", "train.checkpoint_every=1",
                 "train.warmup_ratio=0.2", "train.epochs=2")
    first = _subprocess(args)
    assert first.returncode == 3 and "--resume train.learning_rate=" in first.stderr
    # the same run again diverges again, and knows its last finite loss
    again = _subprocess([*args, "--resume"])
    assert again.returncode == 3
    assert "the last finite loss was none" not in again.stderr
    assert "the last finite loss was" in again.stderr
    fixed = _subprocess([*args, "--resume", "train.learning_rate=1e-3"])
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    m = _strict_json((out / "metrics.json").read_text())
    (change,) = m["resumed_with_changes"]
    assert change["changes"]["train.learning_rate"] == [1e40, 1e-3]
    # an interrupted run that did not diverge keeps its learning rate unless asked (--recover)
    other = tmp_path / "other"
    args = _args(fixtures, tiny_encoder, other, "train.checkpoint_every=3")
    assert _subprocess(args, SEQLAB_CRASH_AT="step-4").returncode == -9
    refused = _subprocess([*args, "--resume", "train.learning_rate=1e-3"])
    assert refused.returncode == 2 and "--recover" in refused.stderr
    assert _subprocess([*args, "--resume", "--recover", "train.learning_rate=1e-3"]).returncode == 0


def test_an_incomplete_distributed_environment_is_one_line(tmp_path, fixtures, tiny_encoder):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "MASTER_ADDR", "MASTER_PORT")}
    run = subprocess.run([sys.executable, "-m", "seqlab.cli",
                          *_args(fixtures, tiny_encoder, tmp_path / "run")], capture_output=True,
                         text=True, env={**env, "WORLD_SIZE": "2"}, cwd=ROOT, timeout=300)
    assert run.returncode == 2
    assert "WORLD_SIZE=2 but RANK, MASTER_ADDR, MASTER_PORT are not set" in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_resume_refuses_a_changed_config(tmp_path, fixtures, tiny_encoder):
    out = tmp_path / "run"
    args = _args(fixtures, tiny_encoder, out, "train.checkpoint_every=3")
    assert _subprocess(args, SEQLAB_CRASH_AT="step-4").returncode == -9
    changed = _subprocess([*args, "train.learning_rate=1e-3", "loss.name=focal", "--resume"])
    assert changed.returncode == 2
    assert "differs from the checkpoint's in loss.name, train.learning_rate" in changed.stderr
    # a longer run is fine
    longer = _subprocess([*args, "train.epochs=5", "--resume"])
    assert longer.returncode == 0, longer.stderr[-2000:]


def test_divergence_stops_with_exit_3_and_a_good_checkpoint(tmp_path, fixtures, tiny_encoder, capsys):
    out = tmp_path / "run"
    rc = main(_args(fixtures, tiny_encoder, out, "train.learning_rate=1e30",
                    "train.checkpoint_every=1", "train.max_grad_norm=0"))
    err = capsys.readouterr().err
    assert rc == 3
    assert "training diverged: a non-finite loss or gradient norm at optimizer step" in err
    assert "the last finite loss was" in err
    staging = out.with_name("run.incomplete")
    assert not out.exists() and staging.is_dir()
    records = [_strict_json(l) for l in (staging / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "nonfinite"
    bad = records[-1]["step"]
    saved = [int(p.name[5:]) for p in (staging / "checkpoints").iterdir() if p.name.startswith("step-")]
    assert saved and max(saved) < bad


def test_skip_finishes_and_counts_the_skipped_steps(tmp_path, fixtures, tiny_encoder):
    out = tmp_path / "run"
    assert main(_args(fixtures, tiny_encoder, out, "train.learning_rate=1e30",
                      "train.on_nonfinite=skip", "train.max_grad_norm=0")) == 0
    metrics = _strict_json((out / "metrics.json").read_text())
    assert metrics["skipped_steps"] > 0
    for line in (out / "metrics.jsonl").read_text().splitlines():
        _strict_json(line)


def _no_dropout(model):
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


def test_gradient_accumulation_takes_the_full_batch_step(tmp_path, fixtures, tiny_encoder):
    from seqlab.assemble import config_from_dict
    from seqlab.tasks import get_task
    from seqlab.train import train

    states = []
    for batch, accum in ((8, 4), (32, 1)):
        cfg = config_from_dict({
            "task": "ner", "data": {"train_file": str(fixtures / "train.conll") + "",
                                    "dev_file": str(fixtures / "dev.conll")},
            "model": {"encoder": str(tiny_encoder), "max_length": 24},
            "train": {"batch_size": batch, "gradient_accumulation_steps": accum, "max_steps": 3,
                      "learning_rate": 1e-3, "warmup_ratio": 0,
                      "output_dir": str(tmp_path / f"b{batch}"), "save_model": False}})
        long = tmp_path / "train.conll"  # 32+ sentences so that one step sees 32
        long.write_text(((fixtures / "train.conll").read_text() + "\n") * 6)
        cfg.data.train_file = str(long)
        task = get_task("ner").from_config(cfg)
        torch.manual_seed(0)
        model = _no_dropout(task.new_model())
        start = {k: v.clone() for k, v in model.state_dict().items()}
        train(cfg, task, model, task.tokenizer, progress=False)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=1e-5, atol=1e-6)
    # the step did move the weights (the same start in both runs)
    assert any(not torch.equal(start[k], states[1][k]) for k in start)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], *, nodes: int) -> list[subprocess.CompletedProcess]:
    """``seqlab train`` under torchrun: two processes on one node, or one process on each of
    ``nodes`` nodes (``--nnodes N --node_rank r`` with the rendezvous on 127.0.0.1, as on a
    cluster with one host name), on a free port."""
    torchrun = str(Path(sys.executable).parent / "torchrun")
    port = str(_free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nodes == 1:
        cmds = [[torchrun, "--nproc_per_node", "2", "--master_port", port]]
    else:
        cmds = [[torchrun, "--nnodes", str(nodes), "--nproc_per_node", "1", "--node_rank",
                 str(rank), "--master_addr", "127.0.0.1", "--master_port", port]
                for rank in range(nodes)]
    procs = [subprocess.Popen([*c, "-m", "seqlab.cli", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
             for c in cmds]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and
                    not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
@pytest.mark.parametrize("nodes", [1, 2], ids=["two-processes", "two-nodes"])
def test_two_processes_equal_one_with_twice_the_batch(tmp_path, fixtures, tiny_encoder, nodes):
    # without dropout, so that splitting a batch over processes changes no random mask
    encoder = tmp_path / "encoder"
    shutil.copytree(tiny_encoder, encoder)
    config = json.loads((encoder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (encoder / "config.json").write_text(json.dumps(config))
    tiny_encoder = encoder
    # a multiple of 8 sentences: no short last batch, which accelerate would even out across
    # processes by repeating examples
    long = tmp_path / "train.conll"
    long.write_text(((fixtures / "train.conll").read_text() + "\n") * 8)
    common = ["train.epochs=2", "train.max_steps=5",
              "train.warmup_ratio=0.2", f"data.train_file={long}"]
    one = tmp_path / "one"
    args_one = _args(fixtures, tiny_encoder, one, "train.batch_size=8", *common)
    assert _subprocess(args_one).returncode == 0
    two = tmp_path / "two"
    args_two = _args(fixtures, tiny_encoder, two, "train.batch_size=4", *common)
    runs = _torchrun(args_two, nodes=nodes)
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    log = [json.loads(l) for l in (one / "metrics.jsonl").read_text().splitlines()]
    log2 = [json.loads(l) for l in (two / "metrics.jsonl").read_text().splitlines()]
    train1 = [r for r in log if r["event"] == "train"]
    train2 = [r for r in log2 if r["event"] == "train"]
    assert [r["step"] for r in train1] == [r["step"] for r in train2] == [1, 2, 3, 4, 5]
    assert [r["lr"] for r in train1] == pytest.approx([r["lr"] for r in train2])
    assert [r["loss"] for r in train2] == pytest.approx([r["loss"] for r in train1], rel=1e-5)
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert m1["steps"] == m2["steps"] == 5
    assert m1["processes"] == 1 and m2["processes"] == 2  # evaluation sharded, then gathered
    assert m2["dev"]["sentences"] == m1["dev"]["sentences"]
    assert m2["dev"]["default"]["f1"] == pytest.approx(m1["dev"]["default"]["f1"])
    # messages once, from the main process (of the first node)
    assert sum(run.stdout.count("model and metrics in") for run in runs) == 1
    assert runs[0].stdout.count("model and metrics in") == 1


def test_bf16_training_evaluates_in_bf16_unless_asked(tmp_path, fixtures, tiny_encoder, monkeypatch):
    from seqlab.tasks.ner import NerTask

    seen = []
    original = NerTask.evaluate

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("dtype"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(NerTask, "evaluate", spy)
    assert main(_args(fixtures, tiny_encoder, tmp_path / "a", "train.bf16=true",
                      "train.epochs=1")) == 0
    assert seen and all(d == torch.bfloat16 for d in seen)
    seen.clear()
    assert main(_args(fixtures, tiny_encoder, tmp_path / "b", "train.bf16=true", "train.epochs=1",
                      "train.eval_precision=fp32")) == 0
    assert seen and all(d is None for d in seen)


def test_compiled_training_takes_the_eager_steps(tmp_path, fixtures, tiny_encoder, monkeypatch):
    """train.compile runs the loss's forward through torch.compile (dynamic shapes: the batches
    have different lengths). Without dropout it takes the same steps as eager; its checkpoints
    hold the module's own keys, so an eager run resumes it."""
    from safetensors.torch import load_file

    import seqlab.train
    from seqlab.assemble import config_from_dict
    from seqlab.tasks import get_task
    from seqlab.train import train

    class Stop(Exception):
        pass

    def run(name, compiled, resume="no", crash=None):
        cfg = config_from_dict({
            "task": "ner", "data": {"train_file": str(fixtures / "train.conll"),
                                    "dev_file": str(fixtures / "dev.conll")},
            "model": {"encoder": str(tiny_encoder), "max_length": 24},
            "train": {"batch_size": 2, "max_steps": 5, "learning_rate": 1e-3, "warmup_ratio": 0,
                      "compile": compiled, "log_every": 1, "checkpoint_every": 3,
                      "resume": resume, "output_dir": str(tmp_path / name), "save_model": False}})
        task = get_task("ner").from_config(cfg)
        torch.manual_seed(0)
        model = _no_dropout(task.new_model())

        def crash_at(point):
            if point == crash:
                raise Stop

        monkeypatch.setattr(seqlab.train, "_crash_point", crash_at)
        return train(cfg, task, model, task.tokenizer, progress=False), task

    eager, task = run("eager", False)
    lengths = {len(task.collate([r])["input_ids"][0]) for r in task.features("train")}
    assert len(lengths) > 1  # the compiled forward sees several sequence lengths
    with pytest.raises(Stop):
        run("compiled", True, crash="step-4")
    step = tmp_path / "compiled.incomplete" / "checkpoints" / "step-3"
    keys = load_file(str(step / "model.safetensors")).keys()
    assert keys and not any("_orig_mod" in k for k in keys)
    resumed, _ = run("compiled", False, resume="yes")  # steps 4 and 5 eager
    assert resumed["loss_history"] == pytest.approx(eager["loss_history"], rel=1e-4)
    assert len(resumed["loss_history"]) == 5
    assert resumed["dev"]["default"] == eager["dev"]["default"]


def test_early_stopping_ends_after_patience_epochs_and_keeps_the_best(tmp_path, fixtures,
                                                                      tiny_encoder):
    # a learning rate too small to change a prediction: no epoch beats the first
    out = tmp_path / "run"
    assert main(_args(fixtures, tiny_encoder, out, "train.epochs=8",
                      "train.early_stopping_patience=2", "train.learning_rate=1e-12")) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["best_epoch"] == 1
    assert m["stopped_early_at_epoch"] == 3 and m["epochs_run"] == 3
    evals = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in evals if e.get("event") == "eval"] == [1, 2, 3]


def test_early_stopping_counts_from_the_first_score_above_zero():
    from seqlab.train import stop_early
    # best at epoch 2, 3 epochs without better: stop at epoch 5 with patience 3, not before
    assert not stop_early(0.4, 2, 4, 3) and stop_early(0.4, 2, 5, 3)
    # still at 0 (nothing predicted yet): never stopped, however long
    assert not stop_early(0.0, 1, 4, 3) and not stop_early(0.0, 1, 20, 3)
    assert not stop_early(None, -1, 1, 3) and not stop_early(0.9, 1, 10, None)


def test_early_stopping_needs_a_dev_split(tmp_path, fixtures, tiny_encoder, capsys):
    args = [a for a in _args(fixtures, tiny_encoder, tmp_path / "run",
                             "train.early_stopping_patience=2") if not a.startswith("data.dev_file")]
    assert main(args) == 2
    assert "early stopping needs a dev split" in capsys.readouterr().err


@pytest.mark.slow
def test_dev_is_evaluated_once_an_epoch_and_the_best_epochs_evaluation_is_kept(
        tmp_path, tiny_encoder, monkeypatch):
    """The end reuses the best epoch's dev evaluation (the same weights) instead of predicting
    dev again: dev is evaluated once per epoch, test once, and metrics.json's dev scores are
    the best epoch's, with its predictions (both decodings) beside them."""
    from seqlab.cli import main
    from seqlab.tasks.ner import NerTask
    from conftest import ner_train_args

    calls = []
    real = NerTask.evaluate

    def counting(self, model, split, **kw):
        calls.append(split)
        return real(self, model, split, **kw)

    monkeypatch.setattr(NerTask, "evaluate", counting)
    out = tmp_path / "run"
    assert main(ner_train_args(tiny_encoder, out, "train.epochs=3")) == 0
    assert calls == ["dev", "dev", "dev", "test"]
    m = json.loads((out / "metrics.json").read_text())
    evals = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    best = [e for e in evals if e.get("event") == "eval"][m["best_epoch"] - 1]
    assert m["dev"]["default"]["f1"] == best["f1"]
    names = sorted(p.name for p in out.glob("predictions_dev*"))
    assert names == ["predictions_dev.argmax.conll", "predictions_dev.conll"]  # viterbi written first
    assert not list(out.glob("*latest*")) and not (out / "best").exists()


def test_a_run_that_predicts_nothing_right_gets_a_hint():
    from seqlab.tasks.ner import NerTask

    def result(f1):
        s = {"precision": f1, "recall": f1, "f1": f1, "support": 12, "per_type": {}}
        return {"default": s, "strict": s}

    zero = NerTask.report(None, {"dev": result(0.0), "test": result(0.0)})
    assert "hint: not one entity was predicted right" in zero and "more epochs" in zero
    assert "hint" not in NerTask.report(None, {"dev": result(0.0), "test": result(0.4)})
