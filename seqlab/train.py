"""The one training loop, on accelerate, for every task.

It knows a task only through the protocol of :class:`seqlab.tasks.Task`: features, collate,
loss, evaluate, the score that picks the best epoch, and what to save beside the model.

The output directory is written as ``<output_dir>.incomplete`` while training and renamed to
``<output_dir>`` only when everything is in place, so a run that stops half-way never leaves a
directory that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import shutil
import signal
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from . import __version__
from .config import Config, changed_keys, save_config
from .errors import ConfigError, SeqlabError


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar length, deterministic given seed and epoch.

    transformers' ``get_length_grouped_indices`` (shuffle, cut into mega-batches of
    ``50 x batch_size``, sort each by length) gives the order; it is cut into batches, and the
    batches are shuffled, so that a run does not see each mega-batch longest first. Measured on
    CoNLL-2003 train at batch 16: 4.1% of positions are padding (49% for random batches).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group: bool = True):
        self.lengths, self.batch_size, self.seed, self.group = lengths, batch_size, seed, group
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        g = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.group:
            order = get_length_grouped_indices(self.lengths, self.batch_size, generator=g)
        else:
            order = torch.randperm(len(self.lengths), generator=g).tolist()
        batches = [order[j: j + self.batch_size] for j in range(0, len(order), self.batch_size)]
        if self.group:
            batches = [batches[k] for k in torch.randperm(len(batches), generator=g).tolist()]
        return iter(batches)


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
    groups = param_groups(model, weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        # fresh groups: the failed constructor may have filled these with fused=True
        return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)


CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"  # written last into a checkpoint; the rename completes it


class TrainingDiverged(SeqlabError):
    """A non-finite loss or gradient norm stopped training (``train.on_nonfinite: stop``)."""

    exit_status = 3


def checkpoints(staging: Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first (a ``.tmp`` one is not complete)."""
    root = staging / CHECKPOINTS
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.startswith("step-") and p.name[5:].isdigit()
            and (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name[5:]))


def prepare_output_dir(cfg: Config) -> tuple[Path, Path]:
    """Check the output directory before any work; return (final, staging) paths.

    Raises:
        ConfigError: the directory (or a parent) is a file, it holds a finished run and
            ``train.overwrite`` is off, or an interrupted run with checkpoints waits in the
            staging directory and neither ``train.resume`` nor ``train.overwrite`` says what to
            do with it.
    """
    t = cfg.train
    out = Path(t.output_dir)
    for up in [out, *out.parents]:
        if up.exists() and not up.is_dir():
            raise ConfigError(f"train.output_dir: {out}: {up} is a file, not a directory")
    staging = out.with_name(out.name + ".incomplete")
    saved = checkpoints(staging)
    if t.resume == "yes" and not saved:
        raise ConfigError(f"--resume: no checkpoint to resume from in {staging}")
    if saved and t.resume == "no" and not t.overwrite:
        raise ConfigError(f"{staging} holds an interrupted run (last checkpoint {saved[-1].name}); "
                          "continue it with `seqlab train CONFIG --resume` (or train.resume=auto), "
                          "or start over with train.overwrite=true")
    if out.exists() and any(out.iterdir()) and not t.overwrite and not saved:
        raise ConfigError(f"train.output_dir: {out} exists and is not empty; choose another "
                          "directory or pass train.overwrite=true")
    return out, staging


def _finish(staging: Path, out: Path) -> None:
    old = out.with_name(out.name + ".old")
    if out.exists():
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
    staging.rename(out)
    if old.exists():
        shutil.rmtree(old)


def _reset_accelerate_state() -> None:
    """accelerate keeps its state in process-wide singletons; a second run with other settings
    (bf16 after fp32, say) needs them cleared. Only done outside distributed launches."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return
    try:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    except (ImportError, AttributeError):
        pass


def _check_launch(accelerator) -> None:
    """Refuse a launch whose environment and accelerate disagree on the number of processes
    (each process would train alone, all into the same directory)."""
    env = int(os.environ.get("WORLD_SIZE", "1"))
    if env != accelerator.num_processes:
        raise ConfigError(
            f"the launcher started {env} processes (WORLD_SIZE) but accelerate sees "
            f"{accelerator.num_processes}: launch with `accelerate launch --num_processes {env} "
            f"-m seqlab.cli train CONFIG` (add --cpu on a machine without GPUs)")


def _crash_point(name: str) -> None:
    """Fault injection for the tests: SIGKILL this process here if SEQLAB_CRASH_AT names it."""
    if os.environ.get("SEQLAB_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def finite_json(obj, path: str = ""):
    """``obj`` with every NaN or infinity replaced by None, and the dotted paths replaced."""
    replaced: list[str] = []

    def walk(x, where):
        if isinstance(x, float) and not math.isfinite(x):
            replaced.append(where or "value")
            return None
        if isinstance(x, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(x)]
        return x

    return walk(obj, path), replaced


def _write_json(path: Path, obj) -> None:
    """Strict JSON (no NaN or Infinity): non-finite numbers become null, listed under
    ``nonfinite_as_null`` in the record itself."""
    clean, replaced = finite_json(obj)
    if replaced and isinstance(clean, dict):
        clean["nonfinite_as_null"] = replaced
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _save_weights(state_dict: dict, directory: Path) -> None:
    """The weights as safetensors, through a temporary file renamed when complete."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "model.safetensors.tmp"
    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}, str(tmp))
    os.replace(tmp, directory / "model.safetensors")


def _load_weights(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def train(cfg: Config, task, model, tokenizer, *, progress: bool = True) -> dict:
    """Fine-tune ``model`` on ``task``; evaluate on dev each epoch, keep the best, test it, save.

    Each optimizer step sums the loss over every micro-batch of the accumulated batch (on every
    process) and divides by the number of labelled items in all of them, so gradient
    accumulation takes the same step as one large batch. Running sums stay on the device; the
    host reads them once per logging interval, checkpoint and epoch end.

    Checkpoints (``train.checkpoint_every`` steps, each epoch's end, every
    ``train.checkpoint_minutes``) go to ``OUTPUT_DIR.incomplete/checkpoints/step-N`` through a
    temporary directory renamed when complete; the best dev weights to
    ``OUTPUT_DIR.incomplete/best``. ``train.resume`` continues from the newest checkpoint with the
    same data order and random state, so the result equals an uninterrupted run.

    Raises:
        TrainingDiverged: a non-finite loss or gradient norm with ``train.on_nonfinite: stop``
            (the run stays ``.incomplete`` with its last good checkpoint).

    Returns:
        The final metrics (also written to ``metrics.json``).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    t = cfg.train
    out, staging = prepare_output_dir(cfg)
    if t.early_stopping_patience and not task.has_split("dev"):
        raise ConfigError("train.early_stopping_patience: early stopping needs a dev split "
                          "(set data.dev_file, or drop the key)")
    saved = checkpoints(staging) if t.resume in ("yes", "auto") else []
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    _reset_accelerate_state()  # train() may run several times in one process (tests, benchmarks)
    # several processes and no GPU: accelerate needs cpu=True to join them (gloo); without it
    # each process would train alone
    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision="bf16" if t.bf16 else "no", cpu=multi_cpu)
    _check_launch(accelerator)
    if saved:
        _check_resumable(cfg, staging)
    set_seed(t.seed)

    with accelerator.main_process_first():
        train_rows = task.features("train")
    lengths = list(train_rows["length"])
    sampler = LengthGroupedBatchSampler(lengths, t.batch_size, t.seed, group=t.group_by_length)
    # what makes runs of one seed comparable in pairs: the same data order, the same start
    fingerprints = {"data_order": fingerprint(list(sampler)),
                    "initial_weights": fingerprint(model.state_dict())}
    # a generator of its own: iterating the loader then draws nothing from the global random
    # state, so a run resumed in mid-epoch sees the same dropout as one never stopped
    loader = DataLoader(train_rows, batch_sampler=sampler, collate_fn=task.collate,
                        generator=torch.Generator().manual_seed(t.seed))
    optimizer = make_optimizer(model, t.weight_decay, t.learning_rate)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    # the loss's forward through the compiled module; accelerate keeps (and checkpoints) the
    # module itself, so checkpoints are the same with and without compile and evaluation runs
    # eager. dynamic: length-grouped batches change the sequence length from batch to batch
    forward_model = torch.compile(model, dynamic=True) if t.compile else model
    # totals from the prepared loader: this process's share of the batches
    accum = t.gradient_accumulation_steps
    steps_per_epoch = math.ceil(len(loader) / accum)
    total_steps = math.ceil(steps_per_epoch * t.epochs)
    if t.max_steps:
        total_steps = min(total_steps, t.max_steps)
    # not prepared: accelerate's wrapper steps it once per process, for totals counted before
    # prepare; this one steps once per optimizer step, and its state goes into the checkpoint
    scheduler = get_linear_schedule_with_warmup(optimizer, int(t.warmup_ratio * total_steps),
                                                total_steps)

    state = {"step": 0, "epoch": 0, "batches_done": 0, "best_score": None, "best_epoch": -1,
             "history": [], "train_time_s": 0.0, "real_tokens": 0, "all_tokens": 0,
             "skipped_steps": 0, "last_finite_loss": None}
    if saved:
        ckpt = saved[-1]
        accelerator.load_state(str(ckpt))
        stored = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
        scheduler.load_state_dict(stored.pop("scheduler"))
        state.update(stored)
        accelerator.print(f"resuming from {ckpt} (step {state['step']}, epoch "
                          f"{state['epoch'] + 1}, {state['batches_done']} batches into it)")
    elif accelerator.is_main_process:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    if accelerator.is_main_process:
        save_config(cfg, staging / "config.yaml")
    accelerator.wait_for_everyone()
    log_path = staging / "metrics.jsonl"

    def log(record: dict) -> None:
        if accelerator.is_main_process:
            clean, _ = finite_json(record)
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(clean, allow_nan=False) + "\n")

    device = accelerator.device
    # evaluation in the training precision unless train.eval_precision says fp32
    eval_dtype = torch.bfloat16 if t.bf16 and t.eval_precision == "same" else None
    params = [p for p in model.parameters() if p.requires_grad]
    inner = getattr(optimizer, "optimizer", optimizer)
    # a skipped step leaves weights and optimizer state as they were: fused AdamW reads a
    # device flag (as under a gradient scaler), so no step waits to know
    skip_on_device = t.on_nonfinite == "skip" and getattr(inner, "_step_supports_amp_scaling", False)

    def zeros(dtype=torch.float32):
        return torch.zeros((), device=device, dtype=dtype)

    run_loss, run_steps, run_bad = zeros(), zeros(), zeros()
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    last_finite = zeros()
    has_finite = zeros(torch.bool)
    last_ckpt_time = time.monotonic()

    def check_finite(epoch: int) -> None:
        """The one host read of the guard: at a log line, a checkpoint or an epoch's end."""
        if t.on_nonfinite != "stop":
            return
        bad_step = int(first_bad)
        if bad_step < 0:
            return
        last = float(last_finite) if bool(has_finite) else state["last_finite_loss"]
        log({"event": "nonfinite", "epoch": epoch + 1, "step": bad_step, "last_finite_loss": last})
        raise TrainingDiverged(
            f"training diverged: a non-finite loss or gradient norm at optimizer step {bad_step} "
            f"(epoch {epoch + 1}); the last finite loss was {last if last is None else f'{last:.4g}'}."
            f" The run stays in {staging} with its last good checkpoint; lower "
            "train.learning_rate, or set train.on_nonfinite=skip to drop such steps")

    def flush_log(epoch: int, elapsed: float, epoch_real: int) -> None:
        nonlocal run_loss, run_steps, run_bad
        loss_sum = accelerator.reduce(run_loss, "mean")
        steps = float(run_steps)
        bad = int(accelerator.reduce(run_bad, "sum"))
        if steps:
            mean = float(loss_sum) / steps
            state["history"].append(mean)
            state["last_finite_loss"] = mean
            log({"event": "train", "epoch": epoch + 1, "step": state["step"], "loss": mean,
                 "lr": scheduler.get_last_lr()[0],
                 "tokens_per_s": epoch_real / elapsed if elapsed else None})
        if bad:
            state["skipped_steps"] += bad
            log({"event": "skipped", "epoch": epoch + 1, "step": state["step"], "steps": bad})
        run_loss, run_steps, run_bad = zeros(), zeros(), zeros()

    def save_checkpoint(epoch: int) -> None:
        nonlocal last_ckpt_time
        check_finite(epoch)
        accelerator.wait_for_everyone()
        root = staging / CHECKPOINTS
        final = root / f"step-{state['step']}"
        tmp = root / f".step-{state['step']}.tmp"
        if accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)
        if accelerator.is_main_process:
            _crash_point(f"checkpoint-write-{state['step']}")
            _write_json(tmp / STATE_FILE, {**state, "scheduler": scheduler.state_dict()})
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            for old in checkpoints(staging)[: -t.keep_checkpoints]:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()
        last_ckpt_time = time.monotonic()

    epochs = math.ceil(t.epochs)
    done = state["step"] >= total_steps
    while state["epoch"] < epochs and not done:
        epoch = state["epoch"]
        model.train()
        skip = state["batches_done"]
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        # the prepared loader passes its own epoch count to the sampler at each pass: set both
        for obj in (loader, batches, sampler):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)
        bar = tqdm(total=steps_per_epoch, initial=skip // accum, desc=f"epoch {epoch + 1}/{epochs}",
                   unit="step", disable=not (progress and accelerator.is_local_main_process))
        t0, paused = time.perf_counter(), 0.0  # paused: training time before a checkpoint
        epoch_real, epoch_all = zeros(torch.long), zeros(torch.long)
        it = iter(batches)
        while True:
            window = list(itertools.islice(it, accum))
            if not window:
                break
            # the labelled items of the whole accumulated batch, on every process
            n_items = torch.stack([task.count_items(b) for b in window]).sum()
            n_items = accelerator.reduce(n_items, "sum").float() / accelerator.num_processes
            window_loss = zeros()
            for k, batch in enumerate(window):
                sync = contextlib.nullcontext() if k == len(window) - 1 else accelerator.no_sync(model)
                with sync:
                    loss = task.compute_loss(forward_model, batch, num_items_in_batch=n_items)
                    accelerator.backward(loss)
                window_loss += loss.detach().float()
                epoch_real += batch["attention_mask"].sum()
                epoch_all += batch["attention_mask"].numel()
            ok = torch.isfinite(window_loss)
            if t.max_grad_norm > 0:
                norm = accelerator.clip_grad_norm_(params, t.max_grad_norm)
                ok = ok & torch.isfinite(norm)
            if skip_on_device:
                inner.found_inf = (~ok).float()
            elif t.on_nonfinite == "skip" and not bool(ok):  # an optimizer with no device flag
                optimizer.zero_grad(set_to_none=True)
            optimizer.step()
            if skip_on_device:
                inner.found_inf = None
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["batches_done"] += len(window)
            _crash_point(f"step-{state['step']}")
            run_loss += torch.where(ok, window_loss, 0.0)
            run_steps += ok.float()
            run_bad += (~ok).float()
            first_bad = torch.where((first_bad < 0) & ~ok, state["step"], first_bad)
            last_finite = torch.where(ok, window_loss, last_finite)
            has_finite = has_finite | ok
            bar.update(1)
            if state["step"] % t.log_every == 0:
                elapsed = paused + time.perf_counter() - t0
                check_finite(epoch)
                flush_log(epoch, elapsed, int(epoch_real))
                bar.set_postfix(loss=f"{state['history'][-1]:.4f}" if state["history"] else "-",
                                tok_s=f"{int(epoch_real) / elapsed:.0f}")
            if state["step"] >= total_steps:
                done = True
                break
            due = (t.checkpoint_every and state["step"] % t.checkpoint_every == 0) or \
                (t.checkpoint_minutes and time.monotonic() - last_ckpt_time > 60 * t.checkpoint_minutes)
            if due:
                paused += time.perf_counter() - t0
                save_checkpoint(epoch)
                t0 = time.perf_counter()
        bar.close()
        epoch_time = paused + time.perf_counter() - t0
        check_finite(epoch)
        epoch_real_n = int(accelerator.reduce(epoch_real, "sum"))
        flush_log(epoch, epoch_time, epoch_real_n)
        state["train_time_s"] += epoch_time
        state["real_tokens"] += epoch_real_n
        state["all_tokens"] += int(accelerator.reduce(epoch_all, "sum"))
        unwrapped = accelerator.unwrap_model(model)
        dev = task.evaluate(unwrapped, "dev", device=device, progress=progress,
                            accelerator=accelerator, dtype=eval_dtype) \
            if task.has_split("dev") else None
        record = {"event": "eval", "split": "dev", "epoch": epoch + 1, "step": state["step"],
                  "epoch_time_s": epoch_time,
                  "train_tokens_per_s": epoch_real_n / epoch_time if epoch_time else None}
        if dev is not None:
            record.update(task.summary(dev))
            score = task.score(dev)
            accelerator.print(f"epoch {epoch + 1}: dev {task.primary_metric} {100 * score:.2f}")
        else:
            score = float(epoch)  # no dev split: the last epoch is the one kept
        log(record)
        if state["best_score"] is None or score > state["best_score"]:
            state["best_score"], state["best_epoch"] = score, epoch + 1
            if accelerator.is_main_process:
                _save_weights(unwrapped.state_dict(), staging / "best")
        patience = t.early_stopping_patience
        if patience and dev is not None and epoch + 1 - state["best_epoch"] >= patience:
            accelerator.print(f"early stopping: no better dev {task.primary_metric} for {patience} "
                              f"epochs (best: epoch {state['best_epoch']})")
            state["stopped_early_at_epoch"] = epoch + 1
            done = True
        state["epoch"], state["batches_done"] = epoch + 1, 0
        if not done and state["epoch"] < epochs:
            save_checkpoint(epoch)

    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(model)
    if (staging / "best" / "model.safetensors").is_file():
        model.load_state_dict(_load_weights(staging / "best"))
    train_time = state["train_time_s"]
    result: dict = {"seqlab_version": __version__, "processes": accelerator.num_processes,
                    **fingerprints,
                    "best_epoch": state["best_epoch"], "steps": state["step"],
                    "skipped_steps": state["skipped_steps"],
                    "epochs_run": state["epoch"],
                    "stopped_early_at_epoch": state.get("stopped_early_at_epoch"),
                    "train_time_s": round(train_time, 2),
                    "train_tokens_per_s": state["real_tokens"] / train_time if train_time else None,
                    "train_tokens_per_s_with_padding":
                        state["all_tokens"] / train_time if train_time else None,
                    "loss_history": state["history"]}
    for split in ("dev", "test"):  # on every process, each its share
        if task.has_split(split):
            res = task.evaluate(model, split, device=device, accelerator=accelerator,
                                dtype=eval_dtype, out_file=staging / f"predictions_{split}.{task.prediction_ext}",
                                progress=progress)
            result[split] = res
            log({"event": "final", "split": split, **task.summary(res)})
    if accelerator.is_main_process:
        if t.save_model:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
        task.save_extra(staging)
        _write_json(staging / "metrics.json", result)
        shutil.rmtree(staging / CHECKPOINTS, ignore_errors=True)
        shutil.rmtree(staging / "best", ignore_errors=True)
        _finish(staging, out)
    return result


def _check_resumable(cfg: Config, staging: Path) -> None:
    """Refuse to resume a run under a config that changes it (anything but its length)."""
    from .config import RESUMABLE_CHANGES

    saved_path = staging / "config.yaml"
    if not saved_path.is_file():
        raise ConfigError(f"{staging}: no config.yaml beside the checkpoints; cannot resume")
    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    differ = [k for k in changed_keys(saved, cfg.to_dict()) if k not in RESUMABLE_CHANGES]
    if differ:
        raise ConfigError(f"cannot resume {staging}: the config differs from the checkpoint's in "
                          f"{', '.join(differ)} (only the run's length may change); restore them, "
                          "or start over with train.overwrite=true")


def train_config(cfg: Config, *, progress: bool = True) -> dict:
    """Train the task a validated config describes and print its report; return the metrics."""
    from accelerate.utils import set_seed

    from .tasks import get_task

    task = get_task(cfg.task).from_config(cfg)
    set_seed(cfg.train.seed)  # the same initialisation for every run of a seed
    model = task.new_model()
    result = train(cfg, task, model, task.tokenizer, progress=progress)
    from accelerate import PartialState

    if PartialState().is_main_process:  # the scores are the main process's
        text = task.report(result)
        if text:
            print(text)
        print(f"model and metrics in {cfg.train.output_dir}")
    return result
