"""The study's grid and bulk prediction on Ray (``ray.init(num_cpus=2)`` on this machine): the
same runs and files as the serial runner, a failed cell retried, a killed driver picked up, and
Ray Data prediction equal to serial prediction line for line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'seqlab[ray]')")

from seqlab.cli import main  # noqa: E402
from seqlab.study import load_study  # noqa: E402

pytestmark = pytest.mark.slow  # every test here trains or starts Ray


@pytest.fixture(autouse=True)
def _ray_down():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _study(tmp_path: Path, fixtures: Path, encoder: Path, out: str, seeds=(1, 2),
           **study) -> Path:
    base = {"task": "ner",
            "data": {"train_file": str(fixtures / "train.conll"),
                     "dev_file": str(fixtures / "dev.conll"),
                     "test_file": str(fixtures / "test.conll")},
            "model": {"encoder": str(encoder), "max_length": 24},
            "train": {"epochs": 1, "batch_size": 4, "learning_rate": 2e-3, "warmup_ratio": 0,
                      "num_threads": 1}}
    path = tmp_path / f"study-{out}.yaml"
    path.write_text(yaml.safe_dump({
        "study": {"output_dir": str(tmp_path / out), "seeds": list(seeds), "baseline": "ce",
                  "resources": {"cpu": 1}, "max_concurrent": 2, **study},
        "base": base, "losses": {"ce": {"name": "ce"}, "focal": {"name": "focal", "gamma": 2.0}}},
        sort_keys=False))
    return path


def _metrics(path: Path) -> dict:
    study = load_study(path)
    out = {}
    for run in study.runs():
        m = json.loads((run.directory / "metrics.json").read_text())
        out[run.name] = (m["data_order"], m["initial_weights"], m["test"]["default"]["f1"],
                         [round(x, 5) for x in m["loss_history"]])
    return out


def test_a_grid_on_ray_equals_the_serial_grid(tmp_path, fixtures, tiny_encoder, capsys):
    serial = _study(tmp_path, fixtures, tiny_encoder, "serial")
    on_ray = _study(tmp_path, fixtures, tiny_encoder, "ray")
    assert main(["study", str(serial), "--no-progress"]) == 0
    assert main(["study", str(on_ray), "--backend", "ray", "--no-progress"]) == 0
    a, b = _metrics(serial), _metrics(on_ray)
    assert set(a) == {"ce/seed-1", "ce/seed-2", "focal/seed-1", "focal/seed-2"} == set(b)
    assert a == b  # the same data orders, initial weights, losses and scores, cell by cell
    for run in load_study(on_ray).runs():  # the serial runner's files, one directory a cell
        assert (run.directory / "predictions_test.conll.gz").is_file()
    assert (tmp_path / "ray" / "report.md").is_file()
    # finished: nothing to train, on either backend
    assert main(["study", str(on_ray), "--backend", "ray", "--no-progress"]) == 0
    assert main(["study", str(on_ray), "--no-progress"]) == 0


def test_a_failing_cell_is_retried(tmp_path, fixtures, tiny_encoder, monkeypatch):
    path = _study(tmp_path, fixtures, tiny_encoder, "retry", seeds=(1,), max_failures=1)
    markers = tmp_path / "markers"
    monkeypatch.setenv("SEQLAB_STUDY_FAIL_ONCE", str(markers))
    assert main(["study", str(path), "--backend", "ray", "--no-progress"]) == 0
    assert len(list(markers.iterdir())) == 2  # every cell failed once, then finished
    assert all(r.finished() for r in load_study(path).runs())


def test_a_killed_driver_is_picked_up_and_trains_only_the_missing_cells(tmp_path, fixtures,
                                                                         tiny_encoder):
    path = _study(tmp_path, fixtures, tiny_encoder, "killed", seeds=(1,), max_concurrent=1)
    study = load_study(path)
    cmd = [sys.executable, "-m", "seqlab.cli", "study", str(path), "--backend", "ray",
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not any(r.finished() for r in study.runs()):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and every Ray process it started
    proc.wait()
    done = {r.name: (r.directory / "metrics.json").stat().st_mtime
            for r in study.runs() if r.finished()}
    assert len(done) == 1, done
    subprocess.run(["ray", "stop", "--force"], capture_output=True,
                   env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert main(["study", str(path), "--backend", "ray", "--no-progress"]) == 0
    assert all(r.finished() for r in study.runs())
    for name, mtime in done.items():  # finished cells were not trained again
        run = next(r for r in study.runs() if r.name == name)
        assert (run.directory / "metrics.json").stat().st_mtime == mtime


def test_bulk_prediction_on_ray_equals_serial_predict(ner_run, tmp_path):
    lines = [f"Peter Blackburn visited Germany on day {k} ." if k % 3 else "EU rejects German "
             f"call to boycott British lamb {k} ." for k in range(60)]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(3):  # three shards: text, JSON lines, Parquet
        part = lines[20 * k: 20 * (k + 1)]
        if k == 0:
            (inputs / "a.txt").write_text("\n".join(part) + "\n")
        elif k == 1:
            (inputs / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in part))
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({"text": part}), str(inputs / "c.parquet"))
    serial = tmp_path / "serial.jsonl"
    src = tmp_path / "all.txt"
    src.write_text("\n".join(lines) + "\n")
    assert main(["predict", str(ner_run), str(src), "--output", str(serial)]) == 0
    want = [json.loads(l) for l in serial.read_text().splitlines()]
    out = tmp_path / "out"
    assert main(["predict", str(ner_run), str(inputs), "--backend", "ray", "--workers", "2",
                 "--output", str(out), "--batch-size", "8"]) == 0
    rows = []
    for f in sorted(out.glob("*.json*")):
        rows += [json.loads(l) for l in f.read_text().splitlines()]
    rows.sort(key=lambda r: (r["source"], r["line"]))  # the order of the input, restored
    assert [r["text"] for r in rows] == lines
    spans = [[(e["type"], e["start"], e["end"], e["text"]) for e in r["entities"]] for r in rows]
    assert spans == [[(e["type"], e["start"], e["end"], e["text"]) for e in w["entities"]]
                     for w in want]
    # scores to their fourth decimal: a text batched beside others sums its floats otherwise
    assert [e["score"] for r in rows for e in r["entities"]] == pytest.approx(
        [e["score"] for w in want for e in w["entities"]], abs=1e-3)
    assert sum(len(r["entities"]) for r in rows) > 0
