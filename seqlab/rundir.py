"""The run directory: ``OUTPUT_DIR.incomplete`` while a run trains, ``OUTPUT_DIR`` when it is
complete, the states between (interrupted, diverged, finished but not renamed), and the policy
for resuming one (the keys that may change). The trainer and the study both read it; it imports
neither.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import yaml

from .assemble import saved_config
from .config import RECOVERY_CHANGES, RESUMABLE_CHANGES, Config, changed_keys, save_config
from .errors import ConfigError
from .files import write_json

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"    # written last into a checkpoint; the rename completes it
FINISHED = "metrics.json"            # written last into a finished run, before the clean-up
DIVERGED = "diverged.json"           # a run stopped by a non-finite loss, gradient or weight


class RunDir:
    """``OUTPUT_DIR.incomplete`` while training, ``OUTPUT_DIR`` when complete, and the states in
    between: interrupted (checkpoints), diverged (``diverged.json``), finished but not renamed
    (``metrics.json``, written last before the clean-up). Nothing is deleted unless
    ``train.overwrite`` says so."""

    def __init__(self, out: Path, staging: Path, resuming: bool):
        self.out, self.staging, self.resuming = out, staging, resuming
        self.done = False  # the run is complete under OUTPUT_DIR

    @classmethod
    def prepare(cls, cfg: Config, *, recover: bool = False) -> RunDir:
        """Check the output directory before any work.

        Raises:
            ConfigError: the directory (or a parent) is a file; it holds a finished run and
                ``train.overwrite`` is off; an interrupted or finished-but-not-renamed run waits
                in the staging directory and neither ``train.resume`` nor ``train.overwrite``
                says what to do with it; ``--resume`` with nothing to resume.
        """
        t = cfg.train
        out = Path(t.output_dir)
        for up in [out, *out.parents]:
            if up.exists() and not up.is_dir():
                raise ConfigError(f"train.output_dir: {out}: {up} is a file, not a directory")
        run = cls(out, out.with_name(out.name + ".incomplete"), resuming=False)
        finished, saved = run.finished(), run.checkpoints()
        occupied = run.staging.is_dir() and any(run.staging.iterdir())
        resume = t.resume in ("yes", "auto")
        if finished and not resume and not t.overwrite:
            raise ConfigError(f"{run.staging} holds a finished run that was not renamed; complete it "
                              "with `seqlab train CONFIG --resume` (nothing is trained again), or "
                              "start over with train.overwrite=true")
        if t.resume in ("yes", "auto") and not (finished or saved or occupied) \
                and (out / FINISHED).is_file():
            run.done = True  # complete already: nothing to resume (a moved-aside old run goes)
            return run
        if t.resume == "yes" and not (finished or saved):
            raise ConfigError(f"--resume: no checkpoint to resume from in {run.staging}")
        if saved and not finished and not resume and not t.overwrite:
            raise ConfigError(f"{run.staging} holds an interrupted run (last checkpoint "
                              f"{saved[-1].name}); continue it with `seqlab train CONFIG --resume` "
                              "(or train.resume=auto), or start over with train.overwrite=true")
        if occupied and not (finished or saved) and not t.overwrite:
            raise ConfigError(f"{run.staging} holds an interrupted run with no checkpoint yet; "
                              "start over with train.overwrite=true")
        if out.exists() and any(out.iterdir()) and not t.overwrite and not (resume and (finished or saved)):
            raise ConfigError(f"train.output_dir: {out} exists and is not empty; choose another "
                              "directory or pass train.overwrite=true")
        run.resuming = resume and bool(finished or saved)
        if run.resuming and not finished:
            _check_resumable(cfg, run.staging, recover or run.is_diverged())
        return run

    def checkpoints(self) -> list[Path]:
        """The complete checkpoints, oldest first (a ``.tmp`` one is not complete)."""
        root = self.staging / CHECKPOINTS
        if not root.is_dir():
            return []
        done = [p for p in root.iterdir() if p.name.startswith("step-") and p.name[5:].isdigit()
                and (p / STATE_FILE).is_file()]
        return sorted(done, key=lambda p: int(p.name[5:]))

    def finished(self) -> bool:
        return (self.staging / FINISHED).is_file()

    def is_diverged(self) -> bool:
        return (self.staging / DIVERGED).is_file()

    def mark_diverged(self, record: dict) -> None:
        if self.staging.is_dir() and _is_main():
            write_json(self.staging / DIVERGED, record)

    def start(self, cfg: Config, accelerator, *, fresh: bool) -> None:
        """A fresh staging directory (an old one is replaced only under ``train.overwrite``,
        checked in :meth:`prepare`), and the resolved config in it."""
        if accelerator.is_main_process:
            if fresh and self.staging.exists():
                shutil.rmtree(self.staging)
            self.staging.mkdir(parents=True, exist_ok=True)
            (self.staging / DIVERGED).unlink(missing_ok=True)
            save_config(cfg, self.staging / "config.yaml")
        accelerator.wait_for_everyone()

    def complete(self) -> dict:
        """The end of a finished run (main process): its checkpoints and best weights removed,
        renamed to ``OUTPUT_DIR`` (a previous ``OUTPUT_DIR`` is replaced: only
        ``train.overwrite`` lets a run start over an existing one). Each step can be interrupted
        and done again."""
        shutil.rmtree(self.staging / CHECKPOINTS, ignore_errors=True)
        _crash_point("finish-checkpoints")
        shutil.rmtree(self.staging / "best", ignore_errors=True)
        _crash_point("finish-best")
        old = self.out.with_name(self.out.name + ".old")
        if self.out.exists():
            if old.exists():
                shutil.rmtree(old)
            self.out.rename(old)
            _crash_point("finish-old")
        self.staging.rename(self.out)
        _crash_point("finish-rename")
        if old.exists():
            shutil.rmtree(old)
        return json.loads((self.out / FINISHED).read_text(encoding="utf-8"))


def _is_main() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def complete_finished(run: RunDir) -> dict:
    """Complete a run that finished but was not renamed (the main process renames); return its
    metrics."""
    from accelerate import PartialState

    state = PartialState()
    if run.done:
        old = run.out.with_name(run.out.name + ".old")
        if state.is_main_process and old.exists():
            shutil.rmtree(old)
        return json.loads((run.out / FINISHED).read_text(encoding="utf-8"))
    result = json.loads((run.staging / FINISHED).read_text(encoding="utf-8"))
    state.wait_for_everyone()
    if state.is_main_process:
        run.complete()
    state.wait_for_everyone()
    return result


def prepare_output_dir(cfg: Config, *, recover: bool = False) -> RunDir:
    """Check the output directory before any work (:meth:`RunDir.prepare`)."""
    return RunDir.prepare(cfg, recover=recover)


def _check_resumable(cfg: Config, staging: Path, recovering: bool) -> None:
    """Refuse to resume under a config that changes the run (anything but its length; after a
    divergence, or with ``--recover``, also the learning rate, ``on_nonfinite`` and
    ``max_grad_norm``)."""
    saved_path = staging / "config.yaml"
    if not saved_path.is_file():
        raise ConfigError(f"{staging}: no config.yaml beside the checkpoints; cannot resume")
    saved = saved_config(yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {})
    allowed = RESUMABLE_CHANGES + (RECOVERY_CHANGES if recovering else ())
    differ = [k for k in changed_keys(saved, cfg.to_dict()) if k not in allowed]
    if differ:
        hint = "" if recovering else (
            "; after a divergence, or with --recover, train.learning_rate, train.on_nonfinite "
            "and train.max_grad_norm may change too" if any(k in RECOVERY_CHANGES for k in differ)
            else "")
        raise ConfigError(f"cannot resume {staging}: the config differs from the checkpoint's in "
                          f"{', '.join(differ)} (only the run's length may change{hint}); restore "
                          "them, or start over with train.overwrite=true")


def _crash_point(name: str) -> None:
    """Fault injection for the tests: SIGKILL this process here if SEQLAB_CRASH_AT names it."""
    if os.environ.get("SEQLAB_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
