"""The study's grid on Ray Tune: one trial per cell, on one machine or a cluster.

``seqlab study CONFIG --backend ray`` makes each unfinished cell of the grid a Tune trial that
trains it with the serial runner's own code (:func:`seqlab.study.grid.train_cell`: a process of
its own, continued from its checkpoint when it was interrupted), with ``study.resources`` per
trial, at most ``study.max_concurrent`` at once, and a failed cell retried up to
``study.max_failures`` times (Tune's ``FailureConfig``). The grid's state is its run
directories, exactly as the serial runner leaves them, so a grid started serially may be
finished on Ray and the other way round, and ``--report`` and ``study-summary`` read the same
files. The Tune experiment lives in ``OUTPUT_DIR/ray/`` (a path every node must reach, on a
cluster); a driver that was killed is picked up by rerunning the same command: the experiment
is restored (``Tuner.restore``, errored trials restarted) and only the cells still missing are
trained, with their seeds, so their data orders and initial weights are the serial runner's.

What Tune would otherwise get wrong, handled here: a trial runs in a working directory of Tune's
(each cell goes back to the driver's, so relative paths in configs hold); a trial is one
process, so a cell takes at most one GPU here (several GPUs per cell would go through Ray
Train's ``TorchTrainer``, which this backend does not do); a cell is a plain ``seqlab train``
process, never ``accelerate launch``, so concurrent cells do not collide on a port; the
Trainer's ``hyperparameter_search`` (which pickles the Trainer) is not used.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SeqlabError

# environment variables a trial's process inherits from the driver (data, caches, fault
# injection for the tests); Ray's workers do not inherit the driver's environment on a cluster
_PASSED = ("SEQLAB_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")


def _need_ray():
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        raise SeqlabError("--backend ray needs Ray: pip install 'seqlab[ray]' (ray[tune,data])"
                          ) from None


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Start Ray on this machine (``address`` None), or join the cluster at ``address``."""
    import ray

    if ray.is_initialized():
        return
    env = {k: v for k, v in os.environ.items() if k.startswith(_PASSED)}
    kwargs = {"runtime_env": {"env_vars": env}, "log_to_driver": False,
              "configure_logging": True, "logging_level": "ERROR"}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **kwargs)


def _fail_once(run_name: str) -> None:
    """Fault injection for the tests: with ``SEQLAB_STUDY_FAIL_ONCE=DIR``, a cell's first
    attempt fails (leaving a marker in DIR), its retry goes on."""
    where = os.environ.get("SEQLAB_STUDY_FAIL_ONCE")
    if not where:
        return
    marker = Path(where) / run_name.replace("/", "__")
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("failed once\n")
        raise RuntimeError(f"{run_name}: the injected failure (SEQLAB_STUDY_FAIL_ONCE)")


def cell_trial(config: dict) -> None:
    """A Tune trial: one cell of the grid, trained as the serial runner trains it."""
    from ray import tune

    from .grid import Run, _claim, train_cell

    config = config["cell"]  # the param space is {"cell": grid_search([...])}
    os.chdir(config["cwd"])  # Tune runs a trial in a directory of its own
    run = Run(config["loss"], config["seed"], Path(config["directory"]), config["config"])
    if run.finished():
        tune.report({"finished": 1, "trained": 0})
        return
    claim = _claim(run)
    if claim is None:  # another process of this grid holds it
        raise RuntimeError(f"{run.name} is being trained by another process")
    try:
        _fail_once(run.name)
        threads = max(1, int(config["cpus"]))
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the cell's process takes its share
        metrics = train_cell(run)
    finally:
        claim.unlink(missing_ok=True)
    report = {"finished": 1, "trained": 1}
    for split in ("test", "dev"):
        value = (metrics.get(split) or {})
        value = value.get("default", value.get("exact", value))
        if isinstance(value, dict) and "f1" in value:
            report[f"{split}_f1"] = float(value["f1"])
    tune.report(report)


def run_grid_ray(study, *, address: str | None = None, progress: bool = True,
                 num_cpus: int | None = None) -> list:
    """Train every unfinished cell of ``study`` as a Ray Tune trial; return the cells that were
    missing when it started (each now finished, or the error says which failed).

    Raises:
        SeqlabError: Ray is not installed, a cell asks for more than one GPU, or cells still
            failed after ``study.max_failures`` retries (named, with where Tune keeps their
            logs).
    """
    from .grid import check_finished_runs

    _need_ray()
    if study.resources.get("gpu", 0) > 1:
        raise SeqlabError("study.resources.gpu: a cell is one process, so at most 1 GPU here; "
                          "several GPUs per cell would need Ray Train's TorchTrainer")
    check_finished_runs(study)
    todo = [r for r in study.runs() if not r.finished()]
    if not todo:
        return []
    from ray import tune

    init_ray(address, num_cpus)
    storage = (study.output_dir / "ray").resolve()
    storage.mkdir(parents=True, exist_ok=True)
    name = f"study-{study.name}"
    cwd = os.getcwd()
    cpus = study.resources.get("cpu", 1.0)
    trainable = tune.with_resources(cell_trial, {"cpu": cpus, "gpu": study.resources.get("gpu", 0.0)})

    def cell(run) -> dict:
        raw = dict(run.config)
        raw["train"] = {**raw.get("train", {}), "num_threads": max(1, int(cpus))}
        return {"loss": run.loss, "seed": run.seed, "directory": str(run.directory.resolve()),
                "config": raw, "cwd": cwd, "cpus": cpus}

    def run_config(experiment: str):
        return tune.RunConfig(name=experiment, storage_path=str(storage),
                              verbose=1 if progress else 0,
                              failure_config=tune.FailureConfig(max_failures=study.max_failures))

    restored = tune.Tuner.can_restore(str(storage / name))
    if restored:  # a driver that was stopped: pick its experiment up
        tune.Tuner.restore(str(storage / name), trainable=trainable, resume_unfinished=True,
                           restart_errored=True).fit()
    missing = [r for r in todo if not r.finished()]
    if missing:  # cells the restored experiment did not hold (or no experiment yet)
        fresh = f"{name}-{len(list(storage.glob(name + '*')))}" if restored else name
        tune.Tuner(trainable, param_space={"cell": tune.grid_search([cell(r) for r in missing])},
                   tune_config=tune.TuneConfig(max_concurrent_trials=study.max_concurrent),
                   run_config=run_config(fresh)).fit()
    failed = [r.name for r in todo if not r.finished()]
    if failed:
        raise SeqlabError(f"{len(failed)} cells failed after {study.max_failures} retries: "
                          f"{', '.join(failed[:5])}; Tune's logs are in {storage}; the same "
                          "command tries them again")
    return todo
