"""A task, a head, a loss and a reader are each one registered class. A toy task (sentence
classification), defined here, goes through train, evaluate, predict, export, report, study and
serve by the CLI, which does not name it; a plug-in distribution (tests/plugin) adds a head, a
loss and a reader through its entry points, used by name in a study, evaluate, predict, report,
serve and export."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pytest
import torch
from torch import nn

from seqlab.cli import main
from seqlab.data.alignment import pad_batch
from seqlab.data.conll import read_conll
from seqlab.errors import ConfigError
from seqlab.files import dumps_line, iter_lines, write_json
from seqlab.heads import HEADS, Head, get_head, model_inputs, register_head
from seqlab.tasks import (TASKS, CliOption, Predictor, RequestError, StudySplit, Task, get_task,
                          register_task)

ROOT = Path(__file__).parents[1]


# --------------------------------------------------------------------------- a toy task


@dataclass
class ToyConfig:
    entity_type: str = "PER"   # the task owns this section: `toy: {entity_type: LOC}`


class ToyHeadContract(Protocol):
    """What a head of the toy task implements: a sentence classifier's model and its loss."""

    def new_model(self) -> nn.Module: ...

    @classmethod
    def load_model(cls, directory, meta) -> nn.Module: ...

    def loss(self, model, batch, num_items_in_batch=None) -> torch.Tensor: ...


class ToyClassifierHead(Head):
    """A sentence classifier on the [CLS] position (transformers' sequence classification)."""

    tasks = ("toy",)

    def new_model(self):
        from transformers import AutoModelForSequenceClassification

        from seqlab.models import quiet, resolve_encoder

        return quiet(AutoModelForSequenceClassification.from_pretrained)(
            resolve_encoder(self.cfg.model.encoder), num_labels=2)

    @classmethod
    def load_model(cls, directory, meta):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(str(directory))

    def loss(self, model, batch, num_items_in_batch=None):
        return self.loss_fn(model(**model_inputs(batch)).logits, batch["label"], num_items_in_batch)

    def count_items(self, batch):
        return torch.tensor(batch["label"].numel())


class ToyTask(Task):
    """Does a sentence mention an entity of the configured type?"""

    primary_metric = "accuracy"
    default_head = "toy_classifier"
    prediction_ext = "jsonl"
    config_sections = {"toy": ToyConfig}
    head_contract = ToyHeadContract   # its heads are checked against it when they register
    cli_options = {"predict": [CliOption(("--show-probability",), "toy: print the probability",
                                         {"action": "store_true", "default": None})]}

    def __init__(self, cfg, tokenizer, splits):
        self.cfg, self.tokenizer, self.splits = cfg, tokenizer, splits
        self.head = get_head(cfg.model.head)(cfg)
        self.head.build_loss()

    @classmethod
    def from_config(cls, cfg):
        from seqlab.models import load_tokenizer

        files = {"train": cfg.data.train_file, "dev": cfg.data.dev_file, "test": cfg.data.test_file}
        splits = {}
        for split, path in files.items():
            if path:
                splits[split] = [(" ".join(s.tokens), int(f"-{cfg.toy.entity_type}" in
                                                        " ".join(s.tags)))
                                 for s in read_conll(path)]
        return cls(cfg, load_tokenizer(cfg.model.encoder), splits)

    def has_split(self, split):
        return bool(self.splits.get(split))

    def features(self, split):
        import datasets

        texts = [t for t, _ in self.splits[split]]
        ids = self.tokenizer(texts)["input_ids"]
        return datasets.Dataset.from_dict({"input_ids": ids, "label": [y for _, y in self.splits[split]],
                                           "length": [len(i) for i in ids]})

    def collate(self, rows):
        batch = pad_batch([{"input_ids": r["input_ids"]} for r in rows], self.tokenizer.pad_token_id)
        batch["label"] = torch.tensor([r["label"] for r in rows])
        return batch

    @torch.inference_mode()
    def predict(self, model, texts, device=None):
        model.eval()
        out = []
        for text in texts:
            ids = torch.tensor([self.tokenizer(text)["input_ids"]])
            probs = model(input_ids=ids).logits.float().softmax(-1)[0]
            out.append(float(probs[1]))
        return out

    def evaluate(self, model, split, *, device=None, out_file=None, progress=True,
                 accelerator=None, dtype=None):
        data = self.splits[split]
        probs = self.predict(model, [t for t, _ in data])
        if out_file is not None:
            with open(out_file, "w") as fh:
                for (t, y), p in zip(data, probs):
                    fh.write(dumps_line({"text": t, "gold": y, "probability": p}))
        counts = [_counts(y, p) for (_, y), p in zip(data, probs)]
        return {**{k: float(f(torch.tensor(counts).sum(0))) for k, f in self.study_scores().items()},
                "accuracy": sum(c[0] == c[1] == c[2] for c in counts) / len(counts),
                "sentences": len(counts)}

    def score(self, result):
        return result["accuracy"]

    def summary(self, result):
        return {"accuracy": result["accuracy"], "f1": result["f1"]}

    # the report, the study and the server

    @classmethod
    def report_sections(cls, data):
        import html

        rows = [json.loads(l) for l in data["predictions"].read_text().splitlines()]
        wrong = [r for r in rows if (r["probability"] > 0.5) != bool(r["gold"])]
        scores = data["metrics"][data["split"]]
        return ([f'<section id="toy-scores"><h2>Scores</h2><p>accuracy '
                 f'{100 * scores["accuracy"]:.2f}, F1 {100 * scores["f1"]:.2f}</p></section>',
                 '<section id="toy-errors"><h2>Misclassified</h2><ul>'
                 + "".join(f"<li>{html.escape(r['text'])}</li>" for r in wrong) + "</ul></section>"],
                {"accuracy": scores["accuracy"], "misclassified": len(wrong)})

    @classmethod
    def study_metrics(cls, split_metrics):
        return {k: split_metrics[k] for k in ("f1", "precision", "recall", "accuracy")}

    @classmethod
    def study_split(cls, run_dir, split, decoding=None):
        from seqlab.files import open_text

        for path in (run_dir / f"predictions_{split}.jsonl.gz", run_dir / f"predictions_{split}.jsonl"):
            if path.is_file():
                with open_text(path) as fh:
                    rows = [json.loads(l) for l in fh]
                return StudySplit(np.array([_counts(r["gold"], r["probability"]) for r in rows]))
        return None

    @classmethod
    def study_scores(cls):
        return {"f1": lambda c: np.where(c[..., 1] + c[..., 2] > 0, 2 * c[..., 0] / np.maximum(
                    c[..., 1] + c[..., 2], 1), 0.0),
                "precision": lambda c: np.where(c[..., 1] > 0, c[..., 0] / np.maximum(c[..., 1], 1), 0.0),
                "recall": lambda c: np.where(c[..., 2] > 0, c[..., 0] / np.maximum(c[..., 2], 1), 0.0)}

    @classmethod
    def predictor(cls, run, opts):
        return ToyPredictor(run, opts)

    def save_extra(self, directory):
        write_json(directory / "seqlab.json", {"task": "toy", "head": self.head.name,
                                               "max_length": self.cfg.model.max_length})

    @classmethod
    def cli_evaluate(cls, opts, run):
        from seqlab.export import prediction_model
        from seqlab.models import load_tokenizer

        run.config.data.train_file, run.config.data.test_file = None, opts.file
        task = cls(run.config, load_tokenizer(str(run.directory)),
                   {"test": cls.from_config(run.config).splits["test"]})
        result = task.evaluate(prediction_model(run, opts), "test")
        print(f"accuracy {100 * result['accuracy']:.2f}")
        return 0

    @classmethod
    def cli_predict(cls, opts, run):
        from seqlab.export import prediction_model
        from seqlab.models import load_tokenizer

        task = cls(run.config, load_tokenizer(str(run.directory)), {})
        texts = [t for t, _, _ in iter_lines(opts.files)]
        probs = task.predict(prediction_model(run, opts), texts)
        for t, p in zip(texts, probs):
            record = {"text": t, "mentions": p > 0.5}
            if opts.extra.get("show_probability"):
                record["probability"] = round(p, 4)
            sys.stdout.write(dumps_line(record))
        return 0


def _counts(gold, probability):
    """(right positive, predicted positive, gold positive) of one sentence."""
    pred = int(probability > 0.5)
    return (pred * int(gold), pred, int(gold))


class ToyPredictor(Predictor):
    """``{"texts": [...]}`` in, whether each mentions the type (and how likely) out."""

    def __init__(self, run, opts):
        from seqlab.export import prediction_model
        from seqlab.models import load_tokenizer

        self.task = ToyTask(run.config, load_tokenizer(str(run.directory)), {})
        self.model = prediction_model(run, opts)

    def parse(self, payload, limits):
        texts = payload.get("texts") if isinstance(payload, dict) else None
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise RequestError(422, 'expected {"texts": ["a sentence", ...]}')
        return texts

    def size(self, item):
        return len(item)

    def predict(self, items):
        return [{"text": t, "mentions": p > 0.5, "probability": round(p, 4)}
                for t, p in zip(items, self.task.predict(self.model, items))]

    def respond(self, results):
        return {"results": results}


# --------------------------------------------------------------------------- the distribution

# A plug-in distribution outside seqlab (tests/plugin): a head, a loss and a reader, one module
# each, declared in its dist-info's seqlab.plugins entry points
PLUGIN = Path(__file__).parent / "plugin"


@pytest.fixture
def toyplug(monkeypatch):
    """The distribution on the path: its entry points seen by the processes started from here,
    its modules registered in this one (again after an earlier test took them away)."""
    import importlib

    from seqlab.losses import loss_registry, register_loss
    from seqlab.readers import READERS, register_reader

    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.setenv("PYTHONPATH", f"{PLUGIN}:{ROOT}")
    head, loss, reader = (importlib.import_module(f"seqlab_toyplug.{m}")
                          for m in ("head", "loss", "reader"))
    register_head("toy_mlp")(head.MlpHead)
    register_loss("squared_focal")(loss.SquaredFocal)
    register_reader("pipes")(reader.PipesReader)
    yield
    HEADS.unregister("toy_mlp")
    loss_registry.unregister("squared_focal")
    READERS.unregister("pipes")


@pytest.fixture
def toys():
    """Register the toy task and its head for one test (one line each), then take them away."""
    register_task("toy")(ToyTask)
    register_head("toy_classifier")(ToyClassifierHead)
    yield
    TASKS.unregister("toy")
    HEADS.unregister("toy_classifier")


def _config(tmp_path: Path, fixtures: Path, encoder: Path, task: str, **model) -> Path:
    path = tmp_path / f"{task}.yaml"
    sections = {"task": task,
                "data": {"train_file": str(fixtures / "train.conll"),
                         "dev_file": str(fixtures / "dev.conll"),
                         "test_file": str(fixtures / "test.conll")},
                "model": {"encoder": str(encoder), "max_length": 32, **model},
                "train": {"epochs": 6, "batch_size": 2, "learning_rate": 3e-3,
                          "warmup_ratio": 0, "output_dir": str(tmp_path / f"run-{task}")}}
    if task == "toy":
        sections["toy"] = {"entity_type": "PER"}
    path.write_text(json.dumps(sections))
    return path


@pytest.mark.slow
def test_a_task_is_one_class_and_one_line(toys, tmp_path, fixtures, tiny_encoder, capsys):
    cfg = _config(tmp_path, fixtures, tiny_encoder, "toy")
    run = tmp_path / "run-toy"
    assert main(["train", str(cfg), "--no-progress"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"dev", "test"} <= set(metrics) and "accuracy" in metrics["test"]
    assert (run / "predictions_test.jsonl").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--file", str(fixtures / "dev.conll")]) == 0
    assert capsys.readouterr().out.startswith("accuracy ")
    src = tmp_path / "in.txt"
    src.write_text("Peter Blackburn visited Germany .\nthe call to boycott lamb .\n")
    assert main(["predict", str(run), str(src), "--show-probability"]) == 0
    torch_lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert len(torch_lines) == 2 and "probability" in torch_lines[0]
    # the report: the task's own sections on the page, beside the curves every run has
    assert main(["report", str(run)]) == 0
    page = (run / "report_test.html").read_text()
    assert 'id="toy-scores"' in page and 'id="toy-errors"' in page and 'id="curves"' in page
    # the server: the task's request schema and answers, the same as `seqlab predict`'s
    from starlette.testclient import TestClient

    from seqlab.assemble import load_run
    from seqlab.serve import ServeOptions, create_app
    from seqlab.tasks import PredictOptions

    task, loaded = load_run(run)
    assert task is ToyTask
    app = create_app(task.predictor(loaded, PredictOptions()), meta=loaded.meta, name="toy",
                     backend="torch", opts=ServeOptions())
    with TestClient(app) as client:
        r = client.post("/predict", json={"texts": src.read_text().splitlines()})
        assert r.status_code == 200, r.text
        served = r.json()["results"]
        assert [s["mentions"] for s in served] == [l["mentions"] for l in torch_lines]
        assert [s["probability"] for s in served] == pytest.approx(
            [l["probability"] for l in torch_lines], abs=1e-4)
        assert client.post("/predict", json={"question": "?"}).status_code == 422
        assert 'data-form="texts"' in client.get("/").text
    # the task's own config section and CLI option
    with pytest.raises(ConfigError, match="unknown config key toy.kind"):
        from seqlab.assemble import load_config

        cfg.write_text(cfg.read_text().replace('"entity_type"', '"kind"'))
        load_config(cfg)
    # export: the task's inputs, the head's outputs
    pytest.importorskip("onnxruntime")
    exported = tmp_path / "toy-onnx"
    assert main(["export", str(run), "--output", str(exported), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["predict", str(exported), str(src), "--show-probability", "--backend",
                 "onnxruntime"]) == 0
    onnx_lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [l["mentions"] for l in onnx_lines] == [l["mentions"] for l in torch_lines]
    assert [l["probability"] for l in onnx_lines] == pytest.approx(
        [l["probability"] for l in torch_lines], abs=1e-3)


@pytest.mark.slow
def test_a_head_is_one_class_and_one_line(toyplug, tmp_path, fixtures, tiny_encoder, capsys):
    cfg = _config(tmp_path, fixtures, tiny_encoder, "ner", head="toy_mlp")
    run = tmp_path / "run-ner"
    assert main(["train", str(cfg), "--no-progress", "train.epochs=12"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["loss_history"][-1] < 0.6 * metrics["loss_history"][0]
    assert json.loads((run / "seqlab.json").read_text())["head"] == "toy_mlp"
    assert main(["evaluate", str(run), "--file", str(fixtures / "test.conll"), "--output",
                 str(tmp_path / "eval.conll"), "--no-progress"]) == 0
    src = tmp_path / "in.txt"
    src.write_text("Peter Blackburn visited Germany .\n")
    out = tmp_path / "pred.jsonl"
    assert main(["predict", str(run), str(src), "--output", str(out)]) == 0
    pytest.importorskip("onnxruntime")
    exported = tmp_path / "ner-onnx"
    assert main(["export", str(run), "--output", str(exported), "--no-progress"]) == 0
    out2 = tmp_path / "pred-onnx.jsonl"
    assert main(["predict", str(exported), str(src), "--output", str(out2), "--backend",
                 "onnxruntime"]) == 0
    a, b = json.loads(out.read_text()), json.loads(out2.read_text())
    assert [(e["type"], e["start"], e["end"]) for e in a["entities"]] == \
        [(e["type"], e["start"], e["end"]) for e in b["entities"]]


@pytest.mark.slow
def test_a_task_goes_through_the_study(toys, tmp_path, fixtures, tiny_encoder, monkeypatch):
    """The study trains each run in a process of its own: there the toy task and head come
    from a distribution's entry point, as a package outside seqlab would declare them."""
    import yaml

    site = tmp_path / "site"
    (site / "seqlab_toytask").mkdir(parents=True)
    (site / "seqlab_toytask" / "__init__.py").write_text(
        "from test_plugins import ToyClassifierHead, ToyTask\n"
        "from seqlab.heads import register_head\n"
        "from seqlab.tasks import register_task\n"
        "register_task('toy')(ToyTask)\n"
        "register_head('toy_classifier')(ToyClassifierHead)\n")
    info = site / "seqlab_toytask-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: seqlab-toytask\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[seqlab.plugins]\ntoytask = seqlab_toytask\n")
    monkeypatch.setenv("PYTHONPATH", f"{site}:{Path(__file__).parent}:{ROOT}")

    base = json.loads(_config(tmp_path, fixtures, tiny_encoder, "toy").read_text())
    base["train"].update(epochs=2)
    del base["train"]["output_dir"]
    path = tmp_path / "study-toy.yaml"
    path.write_text(yaml.safe_dump({
        "study": {"output_dir": str(tmp_path / "study"), "seeds": [1, 2], "baseline": "ce"},
        "base": base,
        # a grid entry may name the task's own config section
        "losses": {"ce": {"loss": {"name": "ce"}}, "focal": {"loss": {"name": "focal"}},
                   "loc": {"toy": {"entity_type": "LOC"}}}}, sort_keys=False))
    assert main(["study", str(path), "--no-progress"]) == 0
    res = json.loads((tmp_path / "study" / "results.json").read_text())
    assert res["task"] == "toy" and res["finished_runs"] == 6
    assert res["bootstrap"]["units"] == "examples"
    for name in ("ce", "focal", "loc"):
        f1 = res["losses"][name]["test"]["f1"]["values"]
        # the study's F1 recomputed from each run's predictions file equals the run's own
        for seed, value in zip((1, 2), f1):
            run = tmp_path / "study" / "runs" / name / f"seed-{seed}"
            assert value == pytest.approx(json.loads((run / "metrics.json").read_text())["test"]["f1"])
            counts = ToyTask.study_split(run, "test").counts.sum(0)
            assert float(ToyTask.study_scores()["f1"](counts)) == pytest.approx(value)
    assert "bootstrap" in res["losses"]["focal"]["vs_baseline"]
    assert (tmp_path / "study" / "report.md").is_file()


def test_unknown_names_list_the_registered_ones(toys, toyplug):
    with pytest.raises(ConfigError, match="task: expected one of ner, qa, toy, got 'pos'"):
        get_task("pos")
    with pytest.raises(ConfigError, match="model.head: expected one of crf, global_pointer, "
                                          "pointer, softmax, tagging, toy_classifier, toy_mlp"):
        get_head("bilstm")


def test_another_tasks_option_is_refused(toys, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "seqlab.json").write_text(json.dumps({"task": "ner", "labels": ["O"]}))
    (run / "config.yaml").write_text("task: ner\n")
    (run / "model.safetensors").write_bytes(b"")
    assert main(["predict", str(run), "--question", "who?"]) == 2
    assert "--question is an option for qa models; this one is ner" in capsys.readouterr().err


def _pipes(conll: Path, out: Path) -> Path:
    out.write_text("".join(" ".join(f"{w}/{t}" for w, t in zip(s.tokens, s.tags)) + "\n"
                           for s in read_conll(conll)))
    return out


@pytest.mark.slow
def test_a_distribution_adds_a_head_a_loss_and_a_reader(toyplug, tmp_path, fixtures, tiny_encoder):
    """Declared in a distribution's entry points, the head, the loss and the reader are used by
    name from the CLI in processes of their own: a study of the head under cross-entropy and the
    plug-in loss on files in the reader's format, then evaluate, predict and report on one of its
    runs, and the server on it (here, where the fixture registered them)."""
    import os
    import shutil
    import subprocess

    import yaml

    from seqlab.tasks.ner import NerTask

    files = {split: _pipes(fixtures / f"{split}.conll", tmp_path / f"{split}.pipes")
             for split in ("train", "dev", "test")}

    def seqlab(*args):
        r = subprocess.run([sys.executable, "-m", "seqlab.cli", *map(str, args)], cwd=tmp_path,
                           env=dict(os.environ), capture_output=True, text=True, timeout=600,
                           check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    listed = seqlab("heads")
    assert "toy_mlp" in listed and "squared_focal" in listed
    # the loss's options come from its function's signature, checked at config time
    check = ("from seqlab.assemble import config_from_dict as c; "
             "cfg = c({'loss': {'name': 'squared_focal', 'gamma': 3}}); print(cfg.loss.options); "
             "c({'loss': {'name': 'squared_focal', 'alpha_x': 1}})")
    r = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=dict(os.environ),
                       capture_output=True, text=True, timeout=300, check=False)
    assert "{'gamma': 3.0}" in r.stdout
    assert "unknown config key loss.alpha_x for loss 'squared_focal'" in r.stderr

    # the study: the plug-in head under two losses, one of them the plug-in's, on .pipes files
    # scored on the training sentences (seven of them): a tiny model predicts entities there,
    # so what is compared below is not nothing to nothing
    base = {"task": "ner",
            "data": {"train_file": str(files["train"]), "dev_file": str(files["dev"]),
                     "test_file": str(files["train"])},
            "model": {"encoder": str(tiny_encoder), "max_length": 32, "head": "toy_mlp"},
            "train": {"epochs": 15, "batch_size": 2, "learning_rate": 1e-2, "warmup_ratio": 0}}
    study = tmp_path / "study"
    config = tmp_path / "study-plugin.yaml"
    config.write_text(yaml.safe_dump({
        # the weights kept: evaluate, predict and serve use a run's below
        "study": {"output_dir": str(study), "seeds": [1, 2], "baseline": "ce", "keep_weights": True},
        "base": base,
        "losses": {"ce": {"loss": {"name": "ce"}},
                   "squared_focal": {"loss": {"name": "squared_focal", "gamma": 3}}}},
        sort_keys=False))
    seqlab("study", config, "--no-progress")
    res = json.loads((study / "results.json").read_text())
    assert res["finished_runs"] == 4 and "bootstrap" in res["losses"]["squared_focal"]["vs_baseline"]
    predicted = 0
    for name in ("ce", "squared_focal"):
        for seed, value in zip((1, 2), res["losses"][name]["test"]["f1"]["values"]):
            run = study / "runs" / name / f"seed-{seed}"
            assert yaml.safe_load((run / "config.yaml").read_text())["loss"]["name"] == name
            assert json.loads((run / "seqlab.json").read_text())["head"] == "toy_mlp"
            # the study's F1 is the run's, and is recomputed from its predictions file
            assert value == pytest.approx(
                json.loads((run / "metrics.json").read_text())["test"]["default"]["f1"])
            counts = NerTask.study_split(run, "test").counts.sum(0)
            assert float(NerTask.study_scores()["f1"](counts)) == pytest.approx(value)
            predicted += int(counts[1])
    assert predicted > 0  # the runs predicted entities: the comparisons above are not 0 == 0
    assert yaml.safe_load((study / "runs" / "squared_focal" / "seed-1" / "config.yaml")
                          .read_text())["loss"]["gamma"] == 3.0

    run = study / "runs" / "squared_focal" / "seed-1"
    metrics = json.loads((run / "metrics.json").read_text())
    # evaluate on a file in the reader's format: the run's own test score again
    out = seqlab("evaluate", run, "--file", files["train"], "--output", tmp_path / "eval.conll",
                 "--no-progress")
    assert f"{100 * metrics['test']['default']['f1']:.2f}" in out
    src = tmp_path / "in.txt"
    src.write_text("\n".join(" ".join(s.tokens) for s in read_conll(fixtures / "train.conll")[:3]))
    seqlab("predict", run, src, "--output", tmp_path / "pred.jsonl")
    predicted_lines = [json.loads(l) for l in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(predicted_lines) == 3 and any(x["entities"] for x in predicted_lines)
    # a run without its weights (a study's, unless study.keep_weights) is said to be one
    weightless = tmp_path / "weightless"
    shutil.copytree(run, weightless, ignore=shutil.ignore_patterns("model.safetensors"))
    r = subprocess.run([sys.executable, "-m", "seqlab.cli", "predict", str(weightless), str(src)],
                       cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 2 and "this run kept no model weights" in r.stderr
    assert "Traceback" not in r.stderr
    # the report: the head labels words, so its page has a calibration figure
    seqlab("report", run)
    page = (run / "report_test.html").read_text()
    assert 'id="scores"' in page and 'id="errors"' in page and "<svg" in page.split(
        'id="calibration"')[1].split("</section>")[0]
    # the server: the same answers as `seqlab predict`
    from starlette.testclient import TestClient

    from seqlab.assemble import load_run
    from seqlab.serve import ServeOptions, create_app
    from seqlab.tasks import PredictOptions

    task, loaded = load_run(run)
    app = create_app(task.predictor(loaded, PredictOptions()), meta=loaded.meta, name="plugin",
                     backend="torch", opts=ServeOptions())
    with TestClient(app) as client:
        r = client.post("/predict", json={"texts": src.read_text().splitlines()})
        assert r.status_code == 200, r.text
        assert [[(e["type"], e["start"], e["end"]) for e in x["entities"]]
                for x in r.json()["results"]] == \
            [[(e["type"], e["start"], e["end"]) for e in x["entities"]] for x in predicted_lines]


def test_a_head_that_breaks_its_tasks_contract_is_refused_at_registration():
    from seqlab.heads.softmax import SoftmaxHead

    class Half(SoftmaxHead):
        tasks = ("ner", "qa")                              # QA needs window_answer

    with pytest.raises(TypeError, match="declares task 'qa' but does not implement window_answer"):
        register_head("half")(Half)

    class NoPrediction(Head):
        def new_model(self):
            return None

    with pytest.raises(TypeError, match="load_model, window_targets, collate, start_prediction"):
        register_head("no_prediction")(NoPrediction)

    class ShortCollate(SoftmaxHead):
        def collate(self, rows):                           # the protocol passes pad_id too
            return {}

    with pytest.raises(TypeError, match=r"do not take the protocol's parameters: collate "
                                        r"\(takes no pad_id\)"):
        register_head("short_collate")(ShortCollate)

    class Shapes(SoftmaxHead):
        target = "boxes"

    with pytest.raises(TypeError, match="target must be one of tags, spans, got 'boxes'"):
        register_head("shapes")(Shapes)
    assert not {"half", "no_prediction", "short_collate", "shapes"} & set(HEADS)


def test_a_plug_in_tasks_heads_are_checked_against_its_contract(toys):
    class NoLoading(ToyClassifierHead):
        load_model = Head.load_model                       # left as the placeholder

    with pytest.raises(TypeError, match="declares task 'toy' but does not implement load_model"):
        register_head("toy_no_loading")(NoLoading)
    assert "toy_no_loading" not in HEADS
    with pytest.raises(TypeError, match="subclass of seqlab.losses._Loss"):
        from seqlab.losses import register_loss

        register_loss("not_a_loss")(dict)


def test_a_loss_is_a_function_and_a_module_that_names_it(tiny_encoder):
    # the recipe of docs/architecture.md, "Adding a loss", as written there
    from torch.nn import functional as F

    from seqlab.assemble import config_from_dict
    from seqlab.losses import _Loss, cross_entropy, loss_registry, register_loss

    def scaled_ce(logits, target, *, scale: float = 1.0, weight=None, ignore_index=-100,
                  reduction="mean", num_items_in_batch=None, binary=False):
        """Cross-entropy times ``scale``."""
        return scale * cross_entropy(logits, target, weight=weight, ignore_index=ignore_index,
                                     reduction=reduction, num_items_in_batch=num_items_in_batch)

    @register_loss("scaled_ce")
    class ScaledCE(_Loss):
        fn = staticmethod(scaled_ce)

    try:
        x, t = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
        assert ScaledCE(scale=2.0)(x, t) == pytest.approx(float(2 * F.cross_entropy(x, t)))
        assert ScaledCE().options == {"scale": 1.0}
        cfg = config_from_dict({"model": {"encoder": str(tiny_encoder)},
                                "loss": {"name": "scaled_ce", "scale": 3}})
        assert cfg.loss.options == {"scale": 3.0}
        head = get_head("softmax")(cfg, ["O", "B-PER", "I-PER"])
        assert head.build_loss().options == {"scale": 3.0} and head.loss_fn is not None
        with pytest.raises(ConfigError, match="loss.scale"):
            config_from_dict({"loss": {"name": "scaled_ce", "scale": "many"}})
        with pytest.raises(ConfigError, match="unknown config key loss.gamma for loss 'scaled_ce'"):
            config_from_dict({"loss": {"name": "scaled_ce", "gamma": 2}})
    finally:
        loss_registry.unregister("scaled_ce")
