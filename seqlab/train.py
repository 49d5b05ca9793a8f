"""The one training loop, on accelerate, for every task and head.

It knows a task only through the protocol of :class:`seqlab.tasks.Task`: features, collate,
loss, evaluate, the score that picks the best epoch, and what to save beside the model.
:func:`train` is the loop; the parts beside it are named: the run directory and its end
(:class:`RunDir`), checkpoints (:class:`Checkpoints`), the non-finite guard
(:class:`NonFiniteGuard`), the log (:class:`MetricsLog`) and the batches
(:class:`LengthGroupedBatchSampler`).

The output directory is written as ``<output_dir>.incomplete`` while training and renamed to
``<output_dir>`` only when everything is in place, so a run that stops half-way never leaves a
directory that looks finished; a run that finished but was not renamed is completed by
``--resume`` without training again.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from . import __version__
from .assemble import saved_config
from .config import RECOVERY_CHANGES, Config, changed_keys
from .errors import ConfigError, SeqlabError
from .files import dumps_line, write_json, write_text
from .rundir import CHECKPOINTS, FINISHED, STATE_FILE, RunDir, _crash_point, complete_finished


class TrainingDiverged(SeqlabError):
    """A non-finite loss, gradient norm or weight stopped training (exit status 3)."""

    exit_status = 3


def train(cfg: Config, task, model, tokenizer, *, progress: bool = True, recover: bool = False,
          config_path: str | None = None) -> dict:
    """Fine-tune ``model`` on ``task``; evaluate on dev each epoch, keep the best, test it, save.

    Each optimizer step sums the loss over the micro-batches of the accumulated batch (on every
    process) and divides by the number of labelled items in all of them, so accumulation and
    several processes take the step of one large batch. Running sums stay on the device; the
    host reads them once per logging interval, checkpoint and epoch end.

    Returns:
        The final metrics (also written to ``metrics.json``).

    Raises:
        TrainingDiverged: a non-finite loss, gradient norm or weight (see :class:`NonFiniteGuard`).
    """
    t = cfg.train
    run = RunDir.prepare(cfg, recover=recover)
    if run.done or run.finished():           # ended but not renamed: complete it, train nothing
        return complete_finished(run)
    if t.early_stopping_patience and not task.has_split("dev"):
        raise ConfigError("train.early_stopping_patience: early stopping needs a dev split "
                          "(set data.dev_file, or drop the key)")
    accelerator = make_accelerator(cfg)
    from accelerate.utils import set_seed
    set_seed(t.seed)
    sampler, loader, fingerprints = make_batches(task, cfg, accelerator, model)
    optimizer = make_optimizer(model, t.weight_decay, t.learning_rate)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = math.ceil(len(loader) / t.gradient_accumulation_steps)
    total_steps = min(math.ceil(steps_per_epoch * t.epochs), t.max_steps or math.inf)
    scheduler = make_scheduler(optimizer, t, total_steps)
    accelerator.register_for_checkpointing(scheduler)
    state = TrainState()
    ckpt = Checkpoints(run, accelerator, state, keep=t.keep_checkpoints)
    changes = ckpt.resume(cfg, scheduler, recover) if run.resuming else None
    run.start(cfg, accelerator, fresh=not run.resuming)
    log = MetricsLog(run.staging / "metrics.jsonl", accelerator, truncate_to=state.log_bytes)
    if changes:
        log.write({"event": "resumed_with_changes", "step": state.step, "changes": changes})
    guard = NonFiniteGuard(t.on_nonfinite, model, optimizer, accelerator, state, run, log,
                           config_path)
    forward_model = torch.compile(model, dynamic=True) if t.compile else model
    precision = torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=t.bf16)
    eval_dtype = torch.bfloat16 if t.bf16 and t.eval_precision == "same" else None
    epochs = math.ceil(t.epochs)

    while state.epoch < epochs and state.step < total_steps and not state.stopped_early:
        model.train()
        bar = tqdm(total=steps_per_epoch, initial=state.batches_done // t.gradient_accumulation_steps,
                   desc=f"epoch {state.epoch + 1}/{epochs}", unit="step",
                   disable=not (progress and accelerator.is_local_main_process))
        timer = EpochTimer()
        for window in accumulation_windows(loader, sampler, accelerator, state, t):
            n_items = accelerator.reduce(torch.stack([task.count_items(b) for b in window]).sum(),
                                         "sum").float() / accelerator.num_processes
            loss = torch.zeros((), device=accelerator.device)
            for k, batch in enumerate(window):
                sync = contextlib.nullcontext() if k == len(window) - 1 else accelerator.no_sync(model)
                with sync, precision:
                    micro = task.compute_loss(forward_model, batch, num_items_in_batch=n_items)
                accelerator.backward(guard.scale(micro))
                loss += micro.detach().float()
                timer.count(batch)
            guard.step(loss, t.max_grad_norm, optimizer)   # clip, step (or skip), on the device
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.batches_done += len(window)
            _crash_point(f"step-{state.step}")
            bar.update(1)
            if state.step % t.log_every == 0:
                guard.check(state.epoch)
                log.train(state, guard, timer, scheduler)
                bar.set_postfix(loss=f"{state.history[-1]:.4f}" if state.history else "-")
            if state.step >= total_steps:
                break
            if ckpt.due(t):
                with timer.paused():
                    ckpt.save(guard, log)
        bar.close()
        guard.check(state.epoch)
        log.train(state, guard, timer, scheduler, epoch_end=True)
        evaluate_epoch(task, model, accelerator, state, run, log, guard, eval_dtype, progress, t)
        state.epoch, state.batches_done = state.epoch + 1, 0
        ckpt.save(guard, log)                # every epoch's end, the last included

    fingerprints["steps_per_epoch"] = steps_per_epoch
    return finish(cfg, task, model, tokenizer, accelerator, state, run, log, guard, fingerprints,
                  eval_dtype, progress)


# --------------------------------------------------------------------------- set-up


def make_accelerator(cfg: Config):
    """An Accelerator for this launch; precision is ours (bf16 autocast around the training
    forward only), so evaluation in float32 is float32."""
    from accelerate import Accelerator

    check_launch_environment()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # several processes and no GPU: accelerate needs cpu=True to join them (gloo)
    accelerator = Accelerator(mixed_precision="no", cpu=world > 1 and not torch.cuda.is_available())
    if world != accelerator.num_processes:
        raise ConfigError(
            f"the launcher started {world} processes (WORLD_SIZE) but accelerate sees "
            f"{accelerator.num_processes}: launch with `accelerate launch --num_processes {world} "
            f"-m seqlab.cli train CONFIG` (add --cpu on a machine without GPUs)")
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    return accelerator


def check_launch_environment() -> None:
    """A launch that says several processes must say where they meet (torchrun and accelerate
    set every one of these); else one line, before anything starts."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world} but {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not set: start the processes "
                          f"with `torchrun --nproc_per_node {world} -m seqlab.cli train CONFIG` "
                          "or `accelerate launch`, which set them")


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Micro-batches of similar length whose optimizer steps do not depend on how a step is
    split, deterministic given seed and epoch.

    The grouping is done over the **effective batch** (``batch_size x accumulation x
    processes``): transformers' ``get_length_grouped_indices`` orders the data (shuffle,
    mega-batches sorted by length), the order is cut into effective batches, they are
    shuffled, and each is split into its micro-batches (nearly equal sizes). Process ``p`` of
    ``P`` takes every ``P``-th micro-batch, so each optimizer step sees exactly the examples of
    one effective batch however it is split: 8 x 4 takes the step of 32 x 1, and 2 processes
    that of one with twice the batch. With one process and no accumulation the order is that
    of plain length grouping. Measured on CoNLL-2003 train at batch 16: 4.1% of positions are
    padding (49% for random batches).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group: bool = True,
                 accumulation: int = 1, processes: int = 1):
        self.lengths, self.batch_size, self.seed, self.group = lengths, batch_size, seed, group
        self.parts = accumulation * processes
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _steps(self) -> list[list[int]]:
        from transformers.trainer_pt_utils import get_length_grouped_indices

        g = torch.Generator().manual_seed(self.seed + self.epoch)
        size = self.batch_size * self.parts
        if self.group:
            order = get_length_grouped_indices(self.lengths, size, generator=g)
        else:
            order = torch.randperm(len(self.lengths), generator=g).tolist()
        steps = [order[j: j + size] for j in range(0, len(order), size)]
        if self.group:
            steps = [steps[k] for k in torch.randperm(len(steps), generator=g).tolist()]
        return steps

    def __iter__(self):
        for step in self._steps():
            n = min(self.parts, len(step))
            cuts = [round(k * len(step) / n) for k in range(n + 1)]
            for k in range(n):
                yield step[cuts[k]: cuts[k + 1]]

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size * self.parts)
        return full * self.parts + min(self.parts, rest)


def fingerprint(obj) -> str:
    """A short hash of a batch order (a list) or of a model's weights (a state dict)."""
    h = hashlib.sha1()
    if isinstance(obj, dict):
        for name, t in obj.items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    else:
        h.update(json.dumps(obj).encode())
    return h.hexdigest()[:16]


def make_batches(task, cfg: Config, accelerator, model):
    """The sampler, the loader and the fingerprints that pair runs of one seed: the data
    order, the initial weights, and the initial encoder's weights (equal across heads)."""
    t = cfg.train
    with accelerator.main_process_first():
        rows = task.features("train")
    sampler = LengthGroupedBatchSampler(list(rows["length"]), t.batch_size, t.seed,
                                        group=t.group_by_length,
                                        accumulation=t.gradient_accumulation_steps,
                                        processes=accelerator.num_processes)
    encoder = getattr(model, "base_model", model)
    fingerprints = {"data_order": fingerprint(list(sampler)),
                    "initial_weights": fingerprint(model.state_dict()),
                    "initial_encoder_weights": fingerprint(encoder.state_dict())}
    # a generator of its own: iterating the loader then draws nothing from the global random
    # state, so a run resumed in mid-epoch sees the same dropout as one never stopped
    loader = DataLoader(rows, batch_sampler=sampler, collate_fn=task.collate,
                        generator=torch.Generator().manual_seed(t.seed))
    return sampler, loader, fingerprints


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, weight_decay: float, lr: float) -> torch.optim.Optimizer:
    """AdamW, fused where torch supports it (CPU and CUDA since torch 2.4): one kernel over all
    parameters instead of a loop of small ones."""
    try:
        return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        # fresh groups: the failed constructor may have filled these with fused=True
        return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)


def make_scheduler(optimizer, t, total_steps: int):
    """Linear warm-up and decay over the run's optimizer steps. Not prepared: accelerate's
    wrapper steps it once per process, for totals counted before prepare; this one steps once
    per optimizer step (and is checkpointed through ``register_for_checkpointing``)."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, int(t.warmup_ratio * total_steps),
                                           total_steps)


@dataclass
class TrainState:
    """The loop's counters: what a checkpoint's ``trainer_state.json`` holds."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0
    best_score: float | None = None
    best_epoch: int = -1
    history: list = field(default_factory=list)
    train_time_s: float = 0.0
    real_tokens: int = 0
    all_tokens: int = 0
    skipped_steps: int = 0
    last_finite_loss: float | None = None
    stopped_early: int | None = None   # the epoch early stopping ended
    log_bytes: int | None = None       # metrics.jsonl's length when the checkpoint was written
    resumed_with_changes: list = field(default_factory=list)
    epoch_time: float = 0.0            # the last epoch's training time and real tokens
    epoch_tokens: int = 0

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def accumulation_windows(loader, sampler, accelerator, state: TrainState, t):
    """The epoch's optimizer steps, each the list of its micro-batches; a resumed epoch skips
    the batches it had done."""
    skip = state.batches_done
    batches = accelerator.skip_first_batches(loader, skip) if skip else loader
    # the prepared loader passes its own epoch count to the sampler at each pass: set both
    for obj in (loader, batches, sampler):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(state.epoch)
    it = iter(batches)
    while window := list(itertools.islice(it, t.gradient_accumulation_steps)):
        yield window


class EpochTimer:
    """Training time and tokens of an epoch, on the device until read; paused for checkpoints."""

    def __init__(self):
        self.start, self.before = time.perf_counter(), 0.0
        self.real = self.all = None

    def count(self, batch) -> None:
        mask = batch["attention_mask"]
        self.real = mask.sum() if self.real is None else self.real + mask.sum()
        self.all = mask.numel() if self.all is None else self.all + mask.numel()

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.start

    @contextlib.contextmanager
    def paused(self):
        self.before += time.perf_counter() - self.start
        yield
        self.start = time.perf_counter()


# --------------------------------------------------------------------------- the guard


class NonFiniteGuard:
    """A non-finite loss or gradient norm, kept on the device and read once per logging
    interval, checkpoint and epoch end; a checkpoint's weights are checked before it is written.

    ``stop`` (default): raise :class:`TrainingDiverged` at the first read after it (the run
    stays ``.incomplete`` with its last good checkpoint, marked as diverged, so that ``--resume``
    may lower the learning rate). ``skip``: such a step leaves weights and optimizer state as
    they were, through :class:`torch.amp.GradScaler` at a fixed scale of 1 (its found-inf check
    and the fused optimizer's device-side skip): no step waits for the device; the cost is one
    pass over the gradients per step (the check). A run that would save non-finite weights
    stops with exit status 3 in either mode.
    """

    def __init__(self, mode: str, model, optimizer, accelerator, state: TrainState, run: RunDir,
                 log: MetricsLog, config_path: str | None):
        self.mode, self.state, self.run, self.accelerator = mode, state, run, accelerator
        self.log = log
        self.config_path = config_path or "CONFIG"
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.smallest = min(self.params, key=lambda p: p.numel())
        self.inner = getattr(optimizer, "optimizer", optimizer)
        device = accelerator.device
        self.scaler = None
        if mode == "skip":
            self.scaler = torch.amp.GradScaler(device.type, init_scale=1.0)
            # a skipped first step is no optimizer step to torch's scheduler, which says so
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        zero = torch.zeros((), device=device)
        self.run_loss, self.run_steps, self.run_bad = zero.clone(), zero.clone(), zero.clone()
        self.first_bad = torch.full((), -1, device=device, dtype=torch.long)
        self.last_finite, self.has_finite = zero.clone(), torch.zeros((), dtype=torch.bool,
                                                                      device=device)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def step(self, loss: torch.Tensor, max_grad_norm: float, optimizer) -> None:
        """Clip and take the optimizer step (``skip``: not where anything is non-finite)."""
        ok = torch.isfinite(loss)
        if self.scaler is not None:
            # a non-finite loss with finite gradients must skip too: make one gradient say so
            if self.smallest.grad is not None:
                self.smallest.grad.add_(torch.where(ok, 0.0, float("nan")))
            self.scaler.unscale_(self.inner)
        if max_grad_norm > 0:
            norm = self.accelerator.clip_grad_norm_(self.params, max_grad_norm)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        ok = ok & torch.isfinite(norm)
        if self.scaler is not None:
            self.scaler.step(self.inner)
            self.scaler.update(1.0)
        else:
            optimizer.step()
        step = self.state.step + 1
        self.run_loss += torch.where(ok, loss, 0.0)
        self.run_steps += ok.float()
        self.run_bad += (~ok).float()
        self.first_bad = torch.where((self.first_bad < 0) & ~ok, step, self.first_bad)
        self.last_finite = torch.where(ok, loss, self.last_finite)
        self.has_finite = self.has_finite | ok

    def last_loss(self) -> float | None:
        return float(self.last_finite) if bool(self.has_finite) else self.state.last_finite_loss

    def check(self, epoch: int) -> None:
        """The host read (stop mode): raise at a non-finite step."""
        if self.mode != "stop":
            return
        bad = int(self.first_bad)
        if bad >= 0:
            self.diverged(f"a non-finite loss or gradient norm at optimizer step {bad} "
                          f"(epoch {epoch + 1})", bad)

    def weights_finite(self) -> bool:
        """Whether every weight is finite: one reduction on the device, one read."""
        return bool(torch.stack([torch.isfinite(p).all() for p in self.params]).all())

    def diverged(self, what: str, step: int) -> None:
        last = self.last_loss()
        saved = self.run.checkpoints()
        where = (f"with its last good checkpoint ({saved[-1].name})" if saved else
                 "with no checkpoint (none was written before it)")
        lr = self.inner.param_groups[0].get("initial_lr", self.inner.param_groups[0]["lr"])
        record = {"step": step, "epoch": self.state.epoch + 1, "what": what,
                  "last_finite_loss": last}
        self.log.write({"event": "nonfinite", **record})
        self.run.mark_diverged(record)
        raise TrainingDiverged(
            f"training diverged: {what}; the last finite loss was "
            f"{'none' if last is None else f'{last:.4g}'}. The run stays in {self.run.staging} "
            f"{where}; continue it with a lower learning rate: `seqlab train {self.config_path} "
            f"--resume train.learning_rate={lr / 10:.3g}` (train.on_nonfinite=skip and "
            "train.max_grad_norm may change too)")


# --------------------------------------------------------------------------- checkpoints


class Checkpoints:
    """accelerate's ``save_state`` (weights as safetensors, optimizer, scheduler, random states)
    into ``checkpoints/step-N`` through a temporary directory renamed when complete, with the
    loop's counters as JSON (``trainer_state.json``, written last); the newest
    ``train.keep_checkpoints`` are kept. Written at each epoch's end, every
    ``train.checkpoint_every`` steps and every ``train.checkpoint_minutes``; never from
    non-finite weights."""

    def __init__(self, run: RunDir, accelerator, state: TrainState, *, keep: int):
        self.run, self.accelerator, self.state, self.keep = run, accelerator, state, keep
        self.last_time = time.monotonic()

    def due(self, t) -> bool:
        return bool((t.checkpoint_every and self.state.step % t.checkpoint_every == 0) or
                    (t.checkpoint_minutes and
                     time.monotonic() - self.last_time > 60 * t.checkpoint_minutes))

    def save(self, guard: NonFiniteGuard, log: MetricsLog) -> None:
        acc, state = self.accelerator, self.state
        guard.check(state.epoch)
        if not guard.weights_finite():
            guard.diverged(f"the weights after optimizer step {state.step} are not finite (the "
                           "loss and gradient norm were); they were not saved", state.step)
        state.last_finite_loss = guard.last_loss()
        state.log_bytes = log.size()
        acc.wait_for_everyone()
        root = self.run.staging / CHECKPOINTS
        final, tmp = root / f"step-{state.step}", root / f".step-{state.step}.tmp"
        if acc.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        if acc.is_main_process:
            _crash_point(f"checkpoint-write-{state.step}")
            write_json(tmp / STATE_FILE, state.to_dict())
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            for old in self.run.checkpoints()[: -self.keep]:
                shutil.rmtree(old)
        acc.wait_for_everyone()
        self.last_time = time.monotonic()

    def resume(self, cfg: Config, scheduler, recover: bool) -> dict | None:
        """Load the newest checkpoint; apply and return the recovery changes (learning rate,
        ``on_nonfinite``, ``max_grad_norm``) against the checkpoint's config, if any."""
        ckpt = self.run.checkpoints()[-1]
        self.accelerator.load_state(str(ckpt))
        stored = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
        for key, value in stored.items():
            if hasattr(self.state, key):
                setattr(self.state, key, value)
        saved = saved_config(yaml.safe_load((self.run.staging / "config.yaml").read_text(
            encoding="utf-8")))
        changes = {k: [_dotted(saved, k), _dotted(cfg.to_dict(), k)]
                   for k in changed_keys(saved, cfg.to_dict()) if k in RECOVERY_CHANGES}
        if "train.learning_rate" in changes:
            lr = cfg.train.learning_rate
            scheduler.base_lrs = [lr for _ in scheduler.base_lrs]
            for group, fn in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas):
                group["initial_lr"] = lr
                group["lr"] = lr * fn(scheduler.last_epoch)
        if changes:
            self.state.resumed_with_changes.append({"step": self.state.step, "changes": changes})
        self.accelerator.print(f"resuming from {ckpt} (step {self.state.step}, epoch "
                               f"{self.state.epoch + 1}, {self.state.batches_done} batches into it)"
                               + (f"; changed: {', '.join(changes)}" if changes else ""))
        return changes or None


def _dotted(d: dict, key: str):
    for part in key.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


# --------------------------------------------------------------------------- the log


class MetricsLog:
    """``metrics.jsonl``: a line per log step, evaluation and event (strict JSON, from the main
    process). A resumed run cuts it back to where its checkpoint was written, so each step has
    one line."""

    def __init__(self, path: Path, accelerator, *, truncate_to: int | None = None):
        self.path, self.main = path, accelerator.is_main_process
        self.accelerator = accelerator
        if self.main and truncate_to is not None and path.is_file():
            with open(path, "r+b") as fh:
                fh.truncate(truncate_to)

    def size(self) -> int:
        return self.path.stat().st_size if self.path.is_file() else 0

    def write(self, record: dict) -> None:
        if self.main:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(dumps_line(record))

    def train(self, state: TrainState, guard: NonFiniteGuard, timer: EpochTimer, scheduler,
              *, epoch_end: bool = False) -> None:
        """The interval's mean loss (and skipped steps): the one read of the running sums."""
        acc = self.accelerator
        loss_sum = acc.reduce(guard.run_loss, "mean")
        steps = float(guard.run_steps)
        bad = int(acc.reduce(guard.run_bad, "sum"))
        elapsed = timer.elapsed()
        real = int(acc.reduce(timer.real, "sum")) if timer.real is not None else 0
        if steps:
            mean = float(loss_sum) / steps
            state.history.append(mean)
            state.last_finite_loss = mean
            self.write({"event": "train", "epoch": state.epoch + 1, "step": state.step,
                        "loss": mean, "lr": scheduler.get_last_lr()[0],
                        "tokens_per_s": real / elapsed if elapsed else None})
        if bad:
            state.skipped_steps += bad
            self.write({"event": "skipped", "epoch": state.epoch + 1, "step": state.step,
                        "steps": bad})
        for t in (guard.run_loss, guard.run_steps, guard.run_bad):
            t.zero_()
        if epoch_end:
            state.train_time_s += elapsed
            state.real_tokens += real
            state.all_tokens += int(acc.reduce(torch.as_tensor(timer.all or 0,
                                                               device=acc.device), "sum"))
            state.epoch_time, state.epoch_tokens = elapsed, real


# --------------------------------------------------------------------------- evaluation and end


def evaluate_epoch(task, model, accelerator, state: TrainState, run: RunDir, log: MetricsLog,
                   guard: NonFiniteGuard, eval_dtype, progress: bool, t) -> None:
    """Dev at an epoch's end: log it, keep the best weights (finite ones), stop early."""
    unwrapped = accelerator.unwrap_model(model)
    epoch_time, tokens = state.epoch_time, state.epoch_tokens
    record = {"event": "eval", "split": "dev", "epoch": state.epoch + 1, "step": state.step,
              "epoch_time_s": epoch_time,
              "train_tokens_per_s": tokens / epoch_time if epoch_time else None}
    dev = None
    latest = run.staging / f"predictions_dev.latest.{task.prediction_ext}"
    if task.has_split("dev"):
        dev = task.evaluate(unwrapped, "dev", device=accelerator.device, progress=progress,
                            accelerator=accelerator, dtype=eval_dtype, out_file=latest)
        record.update(task.summary(dev))
        score = task.score(dev)
        accelerator.print(f"epoch {state.epoch + 1}: dev {task.primary_metric} {100 * score:.2f}")
    else:
        score = float(state.epoch)  # no dev split: the last epoch is the one kept
    log.write(record)
    if state.best_score is None or score > state.best_score:
        state.best_score, state.best_epoch = score, state.epoch + 1
        if not guard.weights_finite():
            guard.diverged(f"the weights after epoch {state.epoch + 1} are not finite", state.step)
        if accelerator.is_main_process:
            save_weights(unwrapped.state_dict(), run.staging / "best")
            if dev is not None and latest.is_file():
                # the best weights' dev evaluation, kept: the end reuses it, not evaluating twice
                for f in run.staging.glob("predictions_dev.latest*"):
                    os.replace(f, run.staging / "best" / f.name.replace(".latest", ""))
                write_json(run.staging / "best" / "dev.json", dev)
    if accelerator.is_main_process:
        for f in run.staging.glob("predictions_dev.latest*"):
            f.unlink()
    patience = t.early_stopping_patience
    if task.has_split("dev") and stop_early(state.best_score, state.best_epoch, state.epoch + 1,
                                            patience):
        accelerator.print(f"early stopping: no better dev {task.primary_metric} for {patience} "
                          f"epochs (best: epoch {state.best_epoch})")
        state.stopped_early = state.epoch + 1


def stop_early(best_score: float | None, best_epoch: int, epoch: int, patience: int | None) -> bool:
    """Whether ``patience`` epochs have passed since the best dev score. The count starts once
    the dev score has left 0: a head that predicts nothing yet (the span heads' first epochs on
    small data) has not stopped improving, it has not started."""
    return bool(patience) and bool(best_score) and epoch - best_epoch >= patience


def save_weights(state_dict: dict, directory: Path) -> None:
    """The weights as safetensors, through a temporary file renamed when complete."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "model.safetensors.tmp"
    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}, str(tmp))
    os.replace(tmp, directory / "model.safetensors")


def finish(cfg: Config, task, model, tokenizer, accelerator, state: TrainState, run: RunDir,
           log: MetricsLog, guard: NonFiniteGuard, fingerprints: dict, eval_dtype,
           progress: bool) -> dict:
    """The best weights back, dev and test scored and written, the model, its card
    (``README.md``) and ``metrics.json`` saved (in that order: ``metrics.json`` marks the run
    finished), then :meth:`RunDir.complete`."""
    from safetensors.torch import load_file

    from .card import model_card

    t = cfg.train
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(model)
    best = run.staging / "best" / "model.safetensors"
    if best.is_file():
        model.load_state_dict(load_file(str(best)))
    result: dict = {"seqlab_version": __version__, "processes": accelerator.num_processes,
                    **fingerprints, "best_epoch": state.best_epoch, "steps": state.step,
                    "epochs_run": state.epoch,
                    "stopped_early_at_epoch": state.stopped_early,
                    "skipped_steps": state.skipped_steps,
                    "resumed_with_changes": state.resumed_with_changes,
                    "train_time_s": round(state.train_time_s, 2),
                    "train_tokens_per_s": (state.real_tokens / state.train_time_s
                                           if state.train_time_s else None),
                    "train_tokens_per_s_with_padding": (state.all_tokens / state.train_time_s
                                                        if state.train_time_s else None),
                    "loss_history": state.history}
    kept = run.staging / "best" / f"predictions_dev.{task.prediction_ext}"
    for split in ("dev", "test"):  # on every process, each its share
        if not task.has_split(split):
            continue
        out_file = run.staging / f"predictions_{split}.{task.prediction_ext}"
        if split == "dev" and best.is_file() and kept.is_file() \
                and (run.staging / "best" / "dev.json").is_file():
            # the best epoch's own dev evaluation, of these weights: not computed again
            res = json.loads((run.staging / "best" / "dev.json").read_text(encoding="utf-8"))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                for f in kept.parent.glob("predictions_dev*"):
                    shutil.copyfile(f, run.staging / f.name)
        else:
            res = task.evaluate(model, split, device=accelerator.device, accelerator=accelerator,
                                dtype=eval_dtype, progress=progress, out_file=out_file)
        result[split] = res
        log.write({"event": "final", "split": split, **task.summary(res)})
    _crash_point("finish-predictions")
    if accelerator.is_main_process:
        if t.save_model:
            if not guard.weights_finite():
                guard.diverged("the final weights are not finite; they were not saved", state.step)
            model.save_pretrained(run.staging)
            tokenizer.save_pretrained(run.staging)
        task.save_extra(run.staging)
        meta = json.loads((run.staging / "seqlab.json").read_text(encoding="utf-8"))
        write_text(run.staging / "README.md", model_card(run.out, cfg, meta, result))
        _crash_point("finish-model")
        write_json(run.staging / FINISHED, result)
        _crash_point("finish-metrics")
        run.complete()
    accelerator.wait_for_everyone()
    return result


def train_config(cfg: Config, *, progress: bool = True, recover: bool = False,
                 config_path: str | None = None) -> dict:
    """Train the task a validated config describes and print its report; return the metrics."""
    from accelerate import PartialState
    from accelerate.utils import set_seed

    from .tasks import get_task

    run = RunDir.prepare(cfg, recover=recover)
    if run.done or run.finished():  # finished: no data to read, nothing to train
        result = complete_finished(run)
        if PartialState().is_main_process:
            print(f"the run in {cfg.train.output_dir} is complete (nothing was trained)")
        return result
    task = get_task(cfg.task).from_config(cfg)
    set_seed(cfg.train.seed)  # the same initialisation for every run of a seed
    model = task.new_model()
    result = train(cfg, task, model, task.tokenizer, progress=progress, recover=recover,
                   config_path=config_path)
    if PartialState().is_main_process:  # the scores are the main process's
        text = task.report(result)
        if text:
            print(text)
        print(f"model and metrics in {cfg.train.output_dir}")
    return result
