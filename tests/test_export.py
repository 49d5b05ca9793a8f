"""`seqlab export` to ONNX and `--backend onnxruntime`: the same logits, the same entities."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from seqlab.cli import main  # noqa: E402

ROOT = Path(__file__).parents[1]
TEXT = "Peter Blackburn visited Germany .\nEU rejects German call to boycott British lamb .\n\nBonn\n"


@pytest.fixture(scope="module")
def run(ner_run):
    return ner_run


@pytest.fixture(scope="module")
def exported(run):
    out = run.with_name("exported")
    assert main(["export", str(run), "--output", str(out)]) == 0
    return out


def _predict(model_dir: Path, tmp_path: Path, name: str, *extra: str) -> list[dict]:
    src = tmp_path / "in.txt"
    src.write_text(TEXT)
    out = tmp_path / f"{name}.jsonl"
    assert main(["predict", str(model_dir), str(src), "--output", str(out), *extra]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_exported_directory_is_self_contained_and_checked(exported):
    for name in ("model.onnx", "export.json", "seqlab.json", "config.yaml", "config.json",
                 "tokenizer.json"):
        assert (exported / name).is_file(), name
    record = json.loads((exported / "export.json").read_text())
    assert record["precision"] == "float32" and record["max_abs_logit_diff_vs_torch"] <= 1e-4


def test_onnx_logits_equal_torch(run, exported, fixtures):
    from seqlab.data.conll import read_conll
    from seqlab.export import OrtModel
    from seqlab.models import load_token_classifier, load_tokenizer
    from seqlab.tasks.ner_inference import predict_words

    sents = [s.tokens for s in read_conll(fixtures / "test.conll")]
    tok = load_tokenizer(str(run))
    kw = dict(max_length=24, overlap=8, batch_size=4, progress=False)
    ours = predict_words(OrtModel(exported), tok, sents, **kw)
    ref = predict_words(load_token_classifier(str(run)), tok, sents, **kw)
    assert [[l for l, _ in s] for s in ours] == [[l for l, _ in s] for s in ref]
    assert [p for s in ours for _, p in s] == pytest.approx([p for s in ref for _, p in s], abs=1e-4)
    ids = torch.randint(5, 50, (3, 11))
    with torch.no_grad():
        torch.testing.assert_close(OrtModel(exported)(input_ids=ids).logits,
                                   load_token_classifier(str(run))(input_ids=ids).logits,
                                   rtol=0, atol=1e-4)


def test_predict_and_evaluate_with_onnxruntime_match_torch(run, exported, fixtures, tmp_path, capsys):
    torch_out = _predict(run, tmp_path, "torch")
    assert _predict(exported, tmp_path, "ort", "--backend", "onnxruntime", "--threads", "1") == torch_out
    # a run directory works too: exported on the fly
    assert _predict(run, tmp_path, "fly", "--backend", "onnxruntime") == torch_out
    scores = []
    for model_dir, extra in ((run, []), (exported, ["--backend", "onnxruntime"])):
        out = tmp_path / f"pred-{len(scores)}.conll"
        assert main(["evaluate", str(model_dir), "--file", str(fixtures / "test.conll"),
                     "--output", str(out), "--no-progress", *extra]) == 0
        scores.append([l for l in capsys.readouterr().out.splitlines() if l.startswith("overall")])
    assert scores[0] == scores[1]


def test_int8_runs_and_gives_valid_output(run, tmp_path):
    out = tmp_path / "int8"
    assert main(["export", str(run), "--output", str(out), "--quantize", "int8"]) == 0
    record = json.loads((out / "export.json").read_text())
    assert record["precision"].startswith("int8")
    lines = _predict(out, tmp_path, "int8", "--backend", "onnxruntime")
    assert [l["text"] for l in lines] == TEXT.splitlines()
    assert any(line["entities"] for line in lines)  # the loop below checks something
    for line in lines:
        for ent in line["entities"]:
            assert line["text"][ent["start"]: ent["end"]] == ent["text"] and 0 <= ent["score"] <= 1


def _bad(args, capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_export_errors(run, exported, tmp_path, capsys, monkeypatch):
    incomplete = tmp_path / "x.incomplete"
    incomplete.mkdir()
    assert "not a finished seqlab run" in _bad(["export", str(incomplete)], capsys)
    assert "exists and is not empty" in _bad(["export", str(run), "--output", str(exported)], capsys)
    # an --output that cannot be a directory fails before the export (no ONNX is traced)
    import torch.onnx

    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("exported before the output was checked")))
    afile = tmp_path / "a-file"
    afile.write_text("x")
    assert "is a file, expected a directory" in _bad(["export", str(run), "--output", str(afile)],
                                                     capsys)
    assert f"{afile} is a file, not a directory" in _bad(
        ["export", str(run), "--output", str(afile / "sub")], capsys)
    monkeypatch.undo()
    assert "use --backend onnxruntime" in _bad(["predict", str(exported), str(run / "config.yaml")],
                                               capsys)
    # an export from another seqlab version
    other = tmp_path / "other"
    other.mkdir()
    for f in exported.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    record = json.loads((other / "export.json").read_text())
    (other / "export.json").write_text(json.dumps({**record, "seqlab_version": "0.0.1"}))
    assert "exported by seqlab 0.0.1" in _bad(["predict", str(other), "--backend", "onnxruntime",
                                               str(run / "config.yaml")], capsys)
    # a missing optional dependency: one line with the install command
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else real(name, *a))
    err = _bad(["export", str(run), "--output", str(tmp_path / "nodeps")], capsys)
    assert "pip install 'seqlab[onnx]'" in err


def test_the_on_the_fly_export_is_made_once(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEQLAB_CACHE", str(tmp_path / "cache"))
    first = _predict(run, tmp_path, "first", "--backend", "onnxruntime")
    assert "exporting" in capsys.readouterr().err
    second = _predict(run, tmp_path, "second", "--backend", "onnxruntime")
    assert "exporting" not in capsys.readouterr().err
    assert first == second == _predict(run, tmp_path, "torch")
    assert len(list((tmp_path / "cache" / "onnx").iterdir())) == 1


@pytest.mark.slow
def test_qa_model_exports_and_predicts_alike(tmp_path, tiny_encoder):
    import random

    words = "the river flows north past old mills and quiet farms while the town meets".split()
    rng = random.Random(1)
    paras = []
    for i in range(8):
        ctx = " ".join(rng.choice(words) for _ in range(30)) + " zebra crossing lights"
        paras.append({"context": ctx, "qas": [{"id": f"q{i}", "question": "which lights ?",
                                               "answers": [{"text": "zebra crossing lights",
                                                            "answer_start": ctx.index("zebra")}]}]})
    data = tmp_path / "qa.json"
    data.write_text(json.dumps({"data": [{"title": "T", "paragraphs": paras}]}))
    cfg = tmp_path / "qa.yaml"
    run = tmp_path / "qa-run"
    cfg.write_text(f"task: qa\ndata: {{train_file: {data}, dev_file: {data}}}\n"
                   f"model: {{encoder: {tiny_encoder}, max_length: 48}}\n"
                   "qa: {doc_stride: 16, max_query_length: 16}\n"
                   f"train: {{epochs: 2, batch_size: 4, learning_rate: 3.0e-3, output_dir: {run}}}\n")
    assert main(["train", str(cfg), "--no-progress"]) == 0
    out = tmp_path / "qa-onnx"
    assert main(["export", str(run), "--output", str(out)]) == 0
    assert json.loads((out / "export.json").read_text())["outputs"] == ["start_logits", "end_logits"]
    ctx = tmp_path / "ctx.txt"
    ctx.write_text(paras[0]["context"])
    answers = []
    for model_dir, extra in ((run, []), (out, ["--backend", "onnxruntime"])):
        dest = tmp_path / f"a{len(answers)}.json"
        assert main(["predict", str(model_dir), "--question", "which lights ?", "--context-file",
                     str(ctx), "--output", str(dest), *extra]) == 0
        answers.append(json.loads(dest.read_text()))
    assert answers[0]["answer"] == answers[1]["answer"]
    assert answers[0]["score"] == pytest.approx(answers[1]["score"], abs=1e-3)
