"""The study's grid and bulk prediction, serial against Ray, on this machine (`make bench-scale`).

1. A 2 x 2 grid (ce and focal, seeds 1 and 2) of the embedded encoder on the first
   `--grid-sentences` CoNLL-2003 training sentences, one epoch: `seqlab study` serially (one run
   at a time, 2 torch threads) against `--backend ray` with two concurrent trials of one thread
   each. Wall time of the whole command, and Ray's own start-up (`ray.init` to shutdown with
   nothing run) measured apart.
2. Bulk prediction of CoNLL-2003 test x `--repeat` (its sentences joined by spaces, in 4 shards)
   with a trained run: serial `seqlab predict` against `--backend ray --workers 2` (one torch
   thread each); wall time, sentences/s, and whether the entities are the same.

Each configuration is timed `--trials` times, alternating, and the median printed beside the
others; the figures go to `--output` (JSON).

    python scripts/bench_scale.py runs/conll2003-ce [--repeat 20] [--trials 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timed(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def _grid_config(directory: Path, backend: str, sentences: int) -> Path:
    path = directory / f"study-scale-{backend}.yaml"
    path.write_text(yaml.safe_dump({
        "study": {"output_dir": str(directory / backend), "seeds": [1, 2], "baseline": "ce",
                  "resources": {"cpu": 1}, "max_concurrent": 2},
        "base": {"task": "ner", "data": {"dataset": "conll2003", "limit": sentences,
                                         "eval_limit": sentences // 2},
                 "model": {"encoder": "minilm-l6", "max_length": 128},
                 "train": {"epochs": 1, "batch_size": 16, "learning_rate": 5e-5}},
        "losses": {"ce": {"name": "ce"}, "focal": {"name": "focal", "gamma": 2.0}}},
        sort_keys=False))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a trained NER run (make train: runs/conll2003-ce)")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--grid-sentences", type=int, default=400)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--skip-grid", action="store_true")
    ap.add_argument("--output", default=str(ROOT / "benchmarks" / "scale" / "bench-scale.json"))
    args = ap.parse_args()
    seqlab = [sys.executable, "-m", "seqlab.cli"]
    result: dict = {"cpu": os.cpu_count(), "trials": args.trials}

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import ray; ray.init(num_cpus=2, "
                    "include_dashboard=False, log_to_driver=False); ray.shutdown()"],
                   check=True, capture_output=True)
    result["ray_init_and_shutdown_s"] = round(time.perf_counter() - t0, 2)
    print(f"Ray start-up and shutdown, nothing run: {result['ray_init_and_shutdown_s']:.1f} s")

    if not args.skip_grid:
        times = {"serial": [], "ray": []}
        for trial in range(args.trials):
            for backend in ("serial", "ray"):
                with tempfile.TemporaryDirectory() as tmp:
                    cfg = _grid_config(Path(tmp), backend, args.grid_sentences)
                    extra = ["--backend", "ray"] if backend == "ray" else []
                    times[backend].append(_timed([*seqlab, "study", str(cfg), "--no-progress",
                                                  *extra]))
                print(f"grid trial {trial + 1}, {backend}: {times[backend][-1]:.1f} s")
        result["grid"] = {b: {"median_s": round(statistics.median(v), 1), "all_s":
                              [round(x, 1) for x in v]} for b, v in times.items()}
        print(f"2 x 2 grid ({args.grid_sentences} sentences, 1 epoch a cell): serial "
              f"{result['grid']['serial']['median_s']:.1f} s, Ray (2 trials x 1 thread) "
              f"{result['grid']['ray']['median_s']:.1f} s (medians of {args.trials})")

    from seqlab.data.registry import load_named

    splits, _ = load_named("conll2003")
    texts = [" ".join(s.tokens) for s in splits["test"]] * args.repeat
    times = {"serial": [], "ray": []}
    same, score_diff = None, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shards = tmp / "in"
        shards.mkdir()
        size = -(-len(texts) // 4)
        for k in range(4):
            (shards / f"part-{k}.txt").write_text("\n".join(texts[k * size:(k + 1) * size]) + "\n")
        (tmp / "all.txt").write_text("\n".join(texts) + "\n")
        for trial in range(args.trials):
            for backend in ("serial", "ray"):
                if backend == "serial":
                    out = tmp / "serial.jsonl"
                    out.unlink(missing_ok=True)
                    cmd = [*seqlab, "predict", args.run, str(tmp / "all.txt"), "--output",
                           str(out), "--no-progress"]
                else:
                    out = tmp / f"ray-{trial}"
                    cmd = [*seqlab, "predict", args.run, str(shards), "--backend", "ray",
                           "--workers", "2", "--output", str(out), "--no-progress"]
                times[backend].append(_timed(cmd))
                print(f"predict trial {trial + 1}, {backend}: {times[backend][-1]:.1f} s")
            if same is None:  # entities by (type, start, end); scores to their 4 decimals
                serial = [json.loads(l)["entities"] for l in
                          (tmp / "serial.jsonl").read_text().splitlines()]
                rows = [json.loads(l) for f in sorted((tmp / "ray-0").glob("*.json*"))
                        for l in f.read_text().splitlines()]
                rows.sort(key=lambda r: (r["source"], r["line"]))
                spans = [[(e["type"], e["start"], e["end"]) for e in es] for es in serial]
                same = [[(e["type"], e["start"], e["end"]) for e in r["entities"]]
                        for r in rows] == spans
                score_diff = max((abs(a["score"] - b["score"]) for es, r in zip(serial, rows)
                                  for a, b in zip(es, r["entities"])), default=0.0)
    n = len(texts)
    result["predict"] = {"sentences": n, "same_entities": same,
                         "max_score_diff": round(score_diff, 6), **{
        b: {"median_s": round(statistics.median(v), 1), "all_s": [round(x, 1) for x in v],
            "sentences_per_s": round(n / statistics.median(v), 1)} for b, v in times.items()}}
    p = result["predict"]
    print(f"bulk prediction, CoNLL-2003 test x {args.repeat} ({n} sentences): serial "
          f"{p['serial']['median_s']:.1f} s ({p['serial']['sentences_per_s']:.0f} sent/s), Ray "
          f"2 workers x 1 thread {p['ray']['median_s']:.1f} s ({p['ray']['sentences_per_s']:.0f} "
          f"sent/s); the same entities (type and span) on every line: {same}, scores within "
          f"{score_diff:.4f} (batches of other texts change the float sums)")
    out = Path(args.output)
    if args.skip_grid and out.is_file() and "grid" in json.loads(out.read_text()):
        result["grid"] = json.loads(out.read_text())["grid"]  # measured by an earlier run
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
