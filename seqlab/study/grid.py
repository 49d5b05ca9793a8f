"""A study's grid: its config, its runs, and the runner that trains them.

A study config (``configs/study-*.yaml``) names one base training config, the variants to
compare and the seeds::

    study: {output_dir: benchmarks/study/wnut17, seeds: [1, 2, 3], baseline: ce}
    base:                       # an ordinary `seqlab train` config, without loss and output_dir
      task: ner
      data: {dataset: wnut17}
      train: {epochs: 3, batch_size: 16, learning_rate: 5.0e-5}
    losses:                     # variant name -> what it changes
      ce: {name: ce}                                   # a `loss:` section
      focal-g2: {name: focal, gamma: 2.0}
      ce-fast: {loss: {name: ce}, train: {learning_rate: 1.0e-4}}   # config sections
      crf: {model: {head: crf}}
      ce-viterbi: {from: ce, decoding: viterbi}        # the runs of `ce`, decoded otherwise
      focal-g1: {name: focal, gamma: 1.0, seeds: [1, 2, 3, 4, 5]}   # its own seeds

A variant's ``seeds`` replace ``study.seeds`` for it (a derived variant has its source's), so
a few variants can be taken to more seeds without training every other one again.

Every run of a seed uses the same seed for initialisation and data order, so a variant and the
baseline differ in what the variant changes and their scores can be compared in pairs. Runs go
to ``OUTPUT_DIR/runs/<variant>/seed-<n>``, each trained in a process of its own; a run directory
holding ``metrics.json`` is finished and skipped, a run interrupted after a checkpoint is
continued from it (exactly, as `seqlab train --resume`), anything else is done afresh, so a grid
can be completed over several sittings, split across machines with ``--shard i/n``, or worked
on by several processes at once (each claims a run, ``seed-<n>.claim``, before training it).
SIGTERM (a scheduler's, or ``kill``) ends the run in training and the grid cleanly: the run's
process goes with it, the claim is removed, and the run's checkpoints stay to continue from.
Weights are not kept unless ``study.keep_weights``; the predictions of the scored split (test,
else dev) are kept, gzipped, for the bootstrap and the calibration figures.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..assemble import config_from_dict, saved_config
from ..config import RESUMABLE_CHANGES, apply_overrides, changed_keys, read_yaml
from ..errors import ConfigError, SeqlabError


@dataclass(frozen=True)
class Run:
    loss: str        # the variant's name
    seed: int
    directory: Path
    config: dict     # the run's whole training config

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
    losses: dict[str, dict]      # variant name -> its entry (trained variants)
    baseline: str
    base: dict
    keep_weights: bool = False
    derived: dict[str, dict] = field(default_factory=dict)  # name -> {from, decoding}
    # the Ray backend: what one cell takes ({cpu: 1, gpu: 0}), cells at once (None: as many as
    # the resources allow), retries of a failed cell
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1.0, "gpu": 0.0})
    max_concurrent: int | None = None
    max_failures: int = 2
    variant_seeds: dict[str, list[int]] = field(default_factory=dict)  # a variant's own seeds

    def seeds_of(self, variant: str) -> list[int]:
        """The seeds a variant is run with (a derived variant: its source's)."""
        variant = self.derived.get(variant, {}).get("from", variant)
        return self.variant_seeds.get(variant, self.seeds)

    def all_seeds(self) -> list[int]:
        """``study.seeds``, then any further seed a variant lists, in order."""
        extra = sorted({s for seeds in self.variant_seeds.values() for s in seeds} - set(self.seeds))
        return [*self.seeds, *extra]

    def runs(self) -> list[Run]:
        """Every run, seed by seed (so that a grid stopped half-way has whole paired seeds)."""
        out = []
        for seed in self.all_seeds():
            for loss, section in self.losses.items():
                if seed not in self.seeds_of(loss):
                    continue
                directory = self.output_dir / "runs" / loss / f"seed-{seed}"
                raw = merge_sections(self.base, variant_config(section))
                train = dict(raw.get("train") or {})
                train.update(seed=seed, output_dir=str(directory), overwrite=True,
                             save_model=self.keep_weights)
                raw["train"] = train
                out.append(Run(loss, seed, directory, raw))
        return out

    def variants(self) -> list[str]:
        """Trained and derived variants, in the config's order."""
        return [*self.losses, *self.derived]


_CORE_SECTIONS = ("loss", "model", "train", "eval", "data")


def variant_keys() -> tuple[str, ...]:
    """The config sections a grid entry may name: the common ones and every registered task's
    own (``qa`` for span QA)."""
    from ..tasks import TASKS

    return _CORE_SECTIONS + tuple(name for _, task in TASKS.items()
                                  for name in task.config_sections)
_STUDY_KEYS = ("output_dir", "seeds", "baseline", "keep_weights", "name", "resources",
               "max_concurrent", "max_failures")


def variant_config(section: dict) -> dict:
    """A grid entry as the part of a training config it changes: ``{name: focal, gamma: 1}`` is
    a ``loss:`` section; a mapping of config sections (``{loss: {...}, train: {...}}``) is used
    as it is, so a run may change the learning rate or the head beside the loss."""
    keys = variant_keys()
    if any(k in keys for k in section):
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


def load_study(path: str | Path, overrides: list[str] | None = None) -> Study:
    """Read and validate a study config; every variant's training config is validated too.

    Raises:
        ConfigError: a missing section, an unknown key, or a run config that does not validate
            (the message names the variant).
    """
    path = Path(path)
    raw = apply_overrides(read_yaml(path, "study config"), overrides or [])
    for key in ("study", "base", "losses"):
        if not isinstance(raw.get(key), dict):
            raise ConfigError(f"{path}: expected a mapping under {key!r}: a study config has "
                              "study, base and losses (e.g. configs/study-wnut17.yaml)")
    unknown = sorted(set(raw) - {"study", "base", "losses"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; valid keys: study, base, losses")
    s = raw["study"]
    bad = sorted(set(s) - set(_STUDY_KEYS))
    if bad:
        raise ConfigError(f"{path}: unknown key study.{bad[0]}; valid keys: {', '.join(_STUDY_KEYS)}")
    if "output_dir" not in s:
        raise ConfigError(f"{path}: study.output_dir is missing")
    seeds = _seed_list(s.get("seeds"), f"{path}: study.seeds")
    if "loss" in raw["base"]:
        raise ConfigError(f"{path}: base.loss: the losses come from the 'losses' section")
    trained, derived, variant_seeds = {}, {}, {}
    for name, entry in raw["losses"].items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: losses.{name}: expected a mapping, got {entry!r}")
        if "seeds" in entry:
            if "from" in entry:
                raise ConfigError(f"{path}: losses.{name}.seeds: a derived variant has the seeds "
                                  f"of {entry['from']!r}")
            entry = dict(entry)
            variant_seeds[name] = _seed_list(entry.pop("seeds"), f"{path}: losses.{name}.seeds")
        if "from" in entry:
            if set(entry) != {"from", "decoding"} or entry["from"] not in raw["losses"]:
                raise ConfigError(f"{path}: losses.{name}: a derived variant is {{from: VARIANT, "
                                  "decoding: NAME}} naming a trained variant")
            derived[name] = dict(entry)
        else:
            trained[name] = entry
    baseline = str(s.get("baseline", "ce"))
    if baseline not in raw["losses"]:
        raise ConfigError(f"{path}: study.baseline {baseline!r} is not one of the losses: "
                          f"{', '.join(raw['losses'])}")
    resources = s.get("resources") or {}
    if not isinstance(resources, dict) or set(resources) - {"cpu", "gpu"} or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            for v in resources.values()):
        raise ConfigError(f"{path}: study.resources: expected {{cpu: N, gpu: N}} (numbers >= 0), "
                          f"got {resources!r}")
    for key in ("max_concurrent", "max_failures"):
        value = s.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < (1 if key == "max_concurrent" else 0)):
            raise ConfigError(f"{path}: study.{key}: expected a whole number "
                              f"{'>= 1' if key == 'max_concurrent' else '>= 0'}, got {value!r}")
    study = Study(name=str(s.get("name", path.stem.removeprefix("study-"))), path=path,
                  output_dir=Path(s["output_dir"]), seeds=list(seeds), losses=trained,
                  baseline=baseline, base=dict(raw["base"]),
                  keep_weights=bool(s.get("keep_weights")), derived=derived,
                  variant_seeds=variant_seeds,
                  resources={"cpu": float(resources.get("cpu", 1)),
                             "gpu": float(resources.get("gpu", 0))},
                  max_concurrent=s.get("max_concurrent"),
                  max_failures=int(s.get("max_failures", 2)))
    first = {}
    for run in study.runs():  # the seeds' configs differ in the seed only: one run a variant
        first.setdefault(run.loss, run)
    for run in first.values():
        try:
            config_from_dict(run.config)
        except ConfigError as exc:
            raise ConfigError(f"{path}: loss {run.loss!r}: {exc}") from None
    return study


def _seed_list(seeds, where: str) -> list[int]:
    if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) for x in seeds) \
            or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: expected a list of distinct integers, got {seeds!r}")
    return list(seeds)


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


def keep_predictions(directory: Path) -> None:
    """Keep the predictions of the scored split, gzipped (the bootstrap and calibration read
    them): test's, or dev's when the run has no test split."""
    files = [f for f in directory.glob("predictions_*") if f.suffix != ".gz" and f.is_file()]
    scored = "test" if any(f.name.startswith("predictions_test") for f in files) else "dev"
    for f in files:
        if f.name.startswith(f"predictions_{scored}"):
            with open(f, "rb") as src, gzip.open(f.with_name(f.name + ".gz"), "wb",
                                                 compresslevel=9) as dst:
                shutil.copyfileobj(src, dst)
        f.unlink()


def run_one(run: Run, *, progress: bool = False, max_steps: int | None = None) -> dict:
    """Train one run of the grid in a process of its own (from scratch: a leftover
    ``.incomplete`` directory is replaced); return its metrics."""
    raw = run.config
    if max_steps is not None:
        raw = apply_overrides(raw, [f"train.max_steps={max_steps}"])
    run.directory.parent.mkdir(parents=True, exist_ok=True)
    # the config goes to the system's temporary directory: a grid killed mid-run leaves no
    # stray file among the results
    with tempfile.NamedTemporaryFile("w", prefix="seqlab-run-", suffix=".yaml",
                                     delete=False) as fh:
        yaml.safe_dump(raw, fh, sort_keys=False)
    try:
        cmd = [sys.executable, "-m", "seqlab.cli", "train", fh.name]
        if not progress:
            cmd.append("--no-progress")
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        os.unlink(fh.name)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
        raise SeqlabError(f"run {run.name} failed (exit {proc.returncode}): {tail}")
    out = Path(raw["train"]["output_dir"])
    keep_predictions(out)
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


# Keys a finished run may differ in from the study's config: where it was written and how the
# process ran, not what was trained.
_RUN_LOCAL_KEYS = ("train.output_dir", "train.overwrite", "train.resume", "train.num_threads",
                   "train.checkpoint_every", "train.checkpoint_minutes", "train.keep_checkpoints",
                   "train.log_every")


def check_finished_runs(study: Study) -> None:
    """Refuse finished runs that the study's config would not make: a grid whose budget or
    variant was edited in place would otherwise mix runs of two configs without a word. Keys
    that only one side has (a run made before a key existed, or after one was dropped) are
    not compared.

    Raises:
        ConfigError: names the first such run, the keys that differ and both values.
    """
    for run in study.runs():
        saved_path = run.directory / "config.yaml"
        if not run.finished() or not saved_path.is_file():
            continue
        saved = saved_config(yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {})
        wanted = config_from_dict(run.config).to_dict()
        differ = [(k, a, b) for k, a, b in _differences(saved, wanted) if k not in _RUN_LOCAL_KEYS]
        if differ:
            shown = ", ".join(f"{k} {a!r} (the study says {b!r})" for k, a, b in differ[:3])
            raise ConfigError(f"{saved_path}: this finished run was made with {shown}; "
                              f"{study.path} no longer makes it: move the run away or restore "
                              "the config")


def _differences(saved: dict, wanted: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, saved value, wanted value) for the keys both mappings hold that differ."""
    out = []
    for key in saved.keys() & wanted.keys():
        a, b = saved[key], wanted[key]
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return sorted(out, key=lambda t: t[0])


def run_grid(study: Study, *, shard_spec: str | None = None, progress: bool = True,
             runner=run_one) -> list[Run]:
    """Run every unfinished run of this shard, in order; return the runs that were trained. A
    run is looked at again just before it starts: one that has finished meanwhile is kept, and
    one that another process is training (its claim, `_claim`) is skipped. A run interrupted
    after a checkpoint of the same config is continued from it (`_resumable`); any other
    leftover of a run is cleared and the run trained afresh. While the grid runs, SIGTERM ends
    it as Ctrl-C does (`_terminate_as_exit`).

    Raises:
        ConfigError: a finished run was made with another config (`check_finished_runs`).
    """
    from tqdm.auto import tqdm

    check_finished_runs(study)
    i, n = parse_shard(shard_spec)
    todo = [r for r in shard(study.runs(), i, n) if not r.finished()]
    done = []
    bar = tqdm(todo, desc=f"study {study.name}", unit="run", disable=not progress)
    with _terminate_as_exit():
        for run in bar:
            if run.finished():  # finished since the list was made (another process, a copy)
                continue
            claim = _claim(run)
            if claim is None:
                continue
            try:
                if run.finished():  # finished between the look above and the claim
                    continue
                bar.set_postfix_str(run.name)
                train_cell(run, runner)
                done.append(run)
            finally:
                claim.unlink(missing_ok=True)
    return done


def train_cell(run: Run, runner=run_one) -> dict:
    """Train one cell of the grid (the caller holds its claim): continued from its checkpoint
    when it was interrupted under the same config (`_resumable`), else from scratch with any
    leftover cleared. The serial runner and the Ray backend both train a cell so."""
    if _resumable(run):
        return runner(Run(run.loss, run.seed, run.directory,
                          apply_overrides(run.config, ["train.resume=auto"])))
    staging = run.directory.with_name(run.directory.name + ".incomplete")
    if staging.exists():
        shutil.rmtree(staging)
    if run.directory.exists():  # without metrics.json: not a finished run
        shutil.rmtree(run.directory)
    return runner(run)


def _resumable(run: Run) -> bool:
    """Whether an interrupted run can be continued: its ``.incomplete`` directory holds a
    complete checkpoint (or the finished run, not yet renamed), it did not diverge, and its
    config is the run's but for what a resumed run may change (the length, where and how it
    runs). Says so on stderr either way where there is something to continue."""
    from ..rundir import RunDir

    staging = run.directory.with_name(run.directory.name + ".incomplete")
    left = RunDir(run.directory, staging, resuming=False)
    if not staging.is_dir() or left.is_diverged() or not (left.finished() or left.checkpoints()):
        return False
    try:
        saved = saved_config(yaml.safe_load((staging / "config.yaml").read_text(encoding="utf-8"))
                             or {})
    except (OSError, yaml.YAMLError):
        saved = None
    wanted = config_from_dict(run.config).to_dict()
    differ = (["config.yaml"] if not isinstance(saved, dict) else
              [k for k in changed_keys(saved, wanted) if k not in RESUMABLE_CHANGES])
    if differ:
        print(f"seqlab study: {run.name}: the interrupted run in {staging} was made with another "
              f"config ({', '.join(differ[:3])}); trained afresh", file=sys.stderr)
        return False
    where = "its finished files" if left.finished() else left.checkpoints()[-1].name
    print(f"seqlab study: {run.name}: continuing the interrupted run from {where}",
          file=sys.stderr)
    return True


class _terminate_as_exit:
    """While the grid runs, SIGTERM raises ``SystemExit(143)`` in the main thread, so that the
    run's process is killed with it (``subprocess.run`` does so on any exception), the claim and
    the temporary config are removed, and the process exits with the usual status: Python's
    default action for SIGTERM ends the process at once, skipping all of that."""

    def __enter__(self):
        self.previous, self.fired = None, False
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._exit)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        if self.fired:
            print("seqlab study: stopped by SIGTERM; the same command continues the grid (a run "
                  "stopped after a checkpoint goes on from it)", file=sys.stderr)
        return False

    def _exit(self, signum, frame):
        self.fired = True
        raise SystemExit(128 + signum)


def _claim(run: Run) -> Path | None:
    """Claim a run for this process: ``seed-N.claim`` beside its directory, made only if no
    other process holds it, so that processes sharing a grid never train the same run. A claim
    left by a process of this machine that has ended is taken over; one held by a live process,
    or made on another machine, is left alone (the run is skipped, with a line saying so).
    Returns the claim's path, or None where the run is someone else's."""
    path = run.directory.with_name(run.directory.name + ".claim")
    path.parent.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                host, pid = path.read_text(encoding="utf-8").split()[:2]
            except (OSError, ValueError):
                host, pid = "", "0"   # being written this instant, or unreadable
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                path.unlink(missing_ok=True)   # its process has ended: take it over
                continue
            print(f"seqlab study: {run.name} is being trained by {host or 'another process'} "
                  f"(process {pid}); skipped (remove {path} if that process has ended)",
                  file=sys.stderr)
            return None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(me + "\n")
        return path
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dry_run(study: Study, *, shard_spec: str | None = None, time_steps: int = 20,
            timer=None) -> str:
    """The runs of this shard with their state, and the time the unfinished ones should take,
    estimated from ``time_steps`` optimizer steps of the first one (in a temporary directory)."""
    check_finished_runs(study)
    i, n = parse_shard(shard_spec)
    runs = shard(study.runs(), i, n)
    todo = [r for r in runs if not r.finished()]
    lines = [f"study {study.name}: {len(runs)} runs in shard {i}/{n}, {len(todo)} to do"]
    lines += [f"  {'done' if r.finished() else 'todo'}  {r.name}" for r in runs]
    if todo:
        per_run = (timer or _time_run)(todo[0], time_steps, tempfile.mkdtemp(prefix="seqlab-study-"))
        lines.append(f"estimated {per_run / 60:.1f} min a run, {len(todo) * per_run / 3600:.1f} h "
                     f"for the {len(todo)} to do (from {time_steps} steps of {todo[0].name}; "
                     "early stopping may end runs sooner)")
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
    evals_done = 1 + sum(1 for s in ("dev", "test") if s in result)
    per_eval = max(0.0, wall - train_s) / evals_done
    total_steps = math.ceil(result["steps_per_epoch"] * cfg.train.epochs)
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    evals = math.ceil(cfg.train.epochs) + 2
    shutil.rmtree(tmp, ignore_errors=True)
    return train_s / max(1, result["steps"]) * total_steps + per_eval * evals
