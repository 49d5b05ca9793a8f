"""Bulk NER prediction on Ray Data: ``seqlab predict RUN INPUTS --backend ray --output DIR``.

The inputs (files, directories of them, or globs: text with one text a line, JSON lines with a
``"text"`` key, Parquet with a ``text`` column) are listed on the driver and read by the
workers, a row per text carrying where it came from (``source``, the file, and ``line``, its
1-based line or row there); ``map_batches`` runs a class whose instances each load the model
once (``--workers`` of them, one CPU each, or one GPU each with ``--gpus-per-worker``), and
the rows go to ``DIR`` as JSON lines or Parquet shards, written by Ray. Each row's entities are
those of the serial ``seqlab predict`` on the same text (the same predictor, tested: types and
spans alike, scores to about 1e-4, as batches of other texts change the float sums); the
shards keep the input's order (Ray's ``preserve_order``), and ``source``/``line`` restore it
whatever the engine does.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

from .errors import SeqlabError

SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")


def input_files(inputs: list[str]) -> list[Path]:
    """The files the inputs name, in order (a directory's files sorted, a glob's matches
    sorted).

    Raises:
        SeqlabError: an input that names nothing, or no file at all.
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in SUFFIXES)
            if not found:
                raise SeqlabError(f"{p}: no {', '.join(SUFFIXES)} files in this directory")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(item) if Path(m).is_file())
            if not matches:
                raise SeqlabError(f"{item}: no such file, directory or glob match")
            out += matches
    if not out:
        raise SeqlabError("no input: give files, directories or globs of texts")
    return [f.resolve() for f in out]


def _rows(item: dict) -> list[dict]:
    """The texts of one input file, each with its source and line (run on a worker)."""
    path = Path(item["source"])
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "text" not in table.column_names:
            raise SeqlabError(f"{path}: no column 'text'; its columns: "
                              f"{', '.join(table.column_names)}")
        return [{"source": str(path), "line": k, "text": str(t)}
                for k, t in enumerate(table.column("text").to_pylist(), start=1)]
    rows = []
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the file starts no text
    for k, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        if path.suffix in (".jsonl", ".json"):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SeqlabError(f"{path}:{k}: invalid JSON ({exc.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise SeqlabError(f'{path}:{k}: expected an object with a "text" string')
            line = obj["text"]
        rows.append({"source": str(path), "line": k, "text": line})
    return rows


class _Predict:
    """One worker's model, loaded once; a batch of rows in, their entities added."""

    def __init__(self, run_dir: str, runtime: str, batch_size: int, threads: int | None):
        import torch

        from .assemble import load_run
        from .tasks import PredictOptions

        torch.set_num_threads(threads or 1)
        task, run = load_run(run_dir)
        self.predictor = task.predictor(run, PredictOptions(batch_size=batch_size,
                                                            backend=runtime, threads=threads))

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch["text"]]
        results = self.predictor.predict(texts)
        return {"source": list(batch["source"]), "line": [int(x) for x in batch["line"]],
                "text": texts, "entities": [json.dumps(r["entities"], ensure_ascii=False)
                                            for r in results]}


def _decode(row: dict) -> dict:
    row["entities"] = json.loads(row["entities"])
    return row


def predict_on_ray(run_dir: str, inputs: list[str], output: str, *, workers: int = 2,
                   batch_size: int = 64, runtime: str = "torch", threads: int | None = None,
                   fmt: str = "jsonl", gpus_per_worker: float = 0.0,
                   address: str | None = None) -> int:
    """Predict every text of ``inputs`` on Ray; return how many were predicted.

    Raises:
        SeqlabError: Ray missing, not an NER run, bad inputs, or an output directory that
            already holds files (all before Ray starts).
    """
    from .study.ray_backend import _need_ray, init_ray
    from .assemble import load_run

    _need_ray()
    task, run = load_run(run_dir)
    if task.cli_options.get("predict"):  # QA: a question and a context, not a text a line
        raise SeqlabError(f"--backend ray predicts a text a line; a {run.meta.get('task')} run "
                          f"takes {', '.join(o.flags[0] for o in task.cli_options['predict'])}")
    files = input_files(inputs)
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SeqlabError(f"--output {out}: expected a new or empty directory for the shards")
    if workers < 1 or batch_size < 1:
        raise SeqlabError("--workers and --batch-size: expected numbers >= 1")
    import ray

    import os

    # locally, a logical CPU for the readers beside the workers' (Ray schedules by these units;
    # each worker runs one torch thread), else the actors hold every CPU and no file is read
    init_ray(address, num_cpus=max(os.cpu_count() or 1, workers + 1))
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ds = ray.data.from_items([{"source": str(f)} for f in files]).flat_map(_rows)
    ds = ds.map_batches(_Predict, fn_constructor_kwargs={
        "run_dir": str(Path(run_dir).resolve()), "runtime": runtime, "batch_size": batch_size,
        "threads": threads}, batch_size=batch_size, concurrency=workers,
        num_cpus=0 if gpus_per_worker else 1, num_gpus=gpus_per_worker)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        ds.write_parquet(str(out))  # entities as a JSON string column
    else:
        ds.map(_decode).write_json(str(out))
    return sum(1 for _ in out.iterdir())
