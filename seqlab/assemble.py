"""Assembly: a configuration validated against the registries. The task (``task:``) says
which sections it owns besides the common ones, the head (``model.head``, else the task's
default) which options and losses apply to it; the loss's options are checked against its
signature. :mod:`seqlab.config` below holds the schema alone (the dataclasses, coercion, YAML,
overrides), which the tasks, heads and losses import; this module imports them.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import (_MODEL_KEYS, CLASS_WEIGHTS, NEGATIVE_RATE, NEGATIVE_SAMPLING, Config,
                     DataConfig, LossConfig, ModelConfig, apply_overrides, build_section, coerce,
                     parse_override, read_yaml)
from .errors import ConfigError

if TYPE_CHECKING:  # the tasks import the schema; this module imports them when it runs
    from .tasks import Run, Task


def _build_model(raw: Any, task) -> tuple[ModelConfig, Any]:
    """The model section and its head: core keys here, the rest validated by the head."""
    from .heads import get_head

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"model: expected a mapping of keys, got {raw!r}")
    core = {k: v for k, v in raw.items() if k in _MODEL_KEYS}
    extra = {k: v for k, v in raw.items() if k not in _MODEL_KEYS}
    model = build_section(ModelConfig, core, "model")
    model.head = model.head or task.default_head
    head = get_head(model.head, key="model.head")
    if task.name not in head.tasks:
        raise ConfigError(f"model.head: the {model.head} head is for task {', '.join(head.tasks)}, "
                          f"not {task.name}; heads for {task.name}: "
                          f"{', '.join(n for n, h in heads_for(task.name))}")
    if extra and head.options is None:
        raise ConfigError(f"unknown config key model.{next(iter(extra))}; valid keys under model: "
                          f"{', '.join(_MODEL_KEYS)}")
    if head.options is not None:
        try:
            opts = build_section(head.options, extra, "model")
        except ConfigError as exc:
            valid = _MODEL_KEYS + [f.name for f in dataclasses.fields(head.options)]
            if str(exc).startswith("unknown config key"):
                raise ConfigError(f"{str(exc).split(';')[0]}; valid keys under model with the "
                                  f"{model.head} head: {', '.join(valid)}") from None
            raise
        model.options = dataclasses.asdict(opts)
    return model, head


def heads_for(task_name: str) -> list[tuple[str, Any]]:
    from .heads import HEADS

    return [(n, h) for n, h in HEADS.items() if task_name in h.tasks]


def _build_loss(raw: Any, head) -> LossConfig:
    from .losses import check_loss_options, loss_option_types, loss_registry

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"loss: expected a mapping like {{name: focal, gamma: 2.0}}, got {raw!r}")
    raw = dict(raw)
    name = raw.pop("name", None)
    name = head.default_loss if name is None else str(name)
    class_weight = raw.pop("class_weight", None)
    if class_weight is not None and class_weight not in CLASS_WEIGHTS:
        raise ConfigError(f"loss.class_weight: expected one of {', '.join(CLASS_WEIGHTS)} or null, "
                          f"got {class_weight!r}")
    if class_weight is not None and raw.get("weight") is not None:
        raise ConfigError("loss: give either loss.weight or loss.class_weight, not both")
    if class_weight is not None and not head.class_weights:
        raise ConfigError(f"loss.class_weight: the {head.name} head has no per-class weights "
                          "(they apply to the softmax head's labels)")
    head.check_loss(name)  # one line when the loss does not fit the head
    sampling = _negative_sampling(raw, head)
    if name not in loss_registry:  # a head's own loss (the CRF's likelihood) takes no options
        if raw:
            raise ConfigError(f"unknown config key loss.{next(iter(raw))} for loss {name!r}; "
                              "it takes no options")
        return LossConfig(name=name, options={}, class_weight=class_weight, **sampling)
    types = loss_option_types(name)
    for key in raw:
        if key not in types:
            raise ConfigError(f"unknown config key loss.{key} for loss {name!r}; valid keys: "
                              f"name, {', '.join(types)}")
    options = {}
    for key, value in raw.items():
        if types[key] is list:
            if value is not None and (not isinstance(value, list) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise ConfigError(f"loss.{key}: expected a list of numbers, got {value!r}")
            options[key] = value
        else:
            options[key] = coerce(f"loss.{key}", value, types[key])
    try:  # the loss's own checks, without building it (the head builds it, once)
        check_loss_options(name, binary=head.binary_losses,
                           **{k: v for k, v in options.items() if k != "weight"})
    except ValueError as exc:
        raise ConfigError(f"loss: {exc}") from None
    return LossConfig(name=name, options=options, class_weight=class_weight, **sampling)


def _negative_sampling(raw: dict, head) -> dict:
    """``loss.negatives``, ``loss.negative_sampling`` and ``loss.negative_temperature``, popped
    from ``raw`` and checked (span heads only)."""
    given = {k: raw.pop(k) for k in ("negatives", "negative_sampling", "negative_temperature")
             if k in raw}
    if not given:
        return {}
    if not head.samples_negatives:
        raise ConfigError(f"loss.{next(iter(given))}: the {head.name} head has no negative spans "
                          "to sample (it applies to global_pointer)")
    out = {}
    negatives = given.get("negatives")
    if negatives is not None:
        if isinstance(negatives, str) and negatives.strip().lower() == "all":
            negatives = "all"
        else:
            try:
                negatives = float(negatives)
            except (TypeError, ValueError):
                negatives = None
            if negatives is None or not (negatives > 0 and math.isfinite(negatives)):
                raise ConfigError(f"loss.negatives: expected all or a positive ratio of negative "
                                  f"spans per word (like {NEGATIVE_RATE}), got "
                                  f"{given['negatives']!r}")
        out["negatives"] = negatives
    if "negative_sampling" in given:
        how = str(given["negative_sampling"])
        if how not in NEGATIVE_SAMPLING:
            raise ConfigError(f"loss.negative_sampling: expected one of "
                              f"{', '.join(NEGATIVE_SAMPLING)}, got {how!r}")
        out["negative_sampling"] = how
    if "negative_temperature" in given:
        t = coerce("loss.negative_temperature", given["negative_temperature"], float)
        if not t > 0:
            raise ConfigError(f"loss.negative_temperature: expected > 0, got {t}")
        out["negative_temperature"] = t
    return out


def config_from_dict(raw: dict) -> Config:
    """Build and validate a :class:`Config` from a plain mapping (as read from YAML).

    The task (``task:``) says which sections it owns besides the common ones, and the head
    (``model.head``, else the task's default) which options and losses apply to it.
    """
    from .tasks import get_task

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
    raw = dict(raw)
    task = get_task(coerce("task", raw.get("task", "ner"), str))
    raw = task.upgrade_config(raw)
    own = dict(task.config_sections)
    loss_raw, model_raw = raw.pop("loss", None), raw.pop("model", None)
    section_raw = {name: raw.pop(name) for name in own if name in raw}
    core = [f.name for f in dataclasses.fields(Config) if f.name != "sections"]
    unknown = [k for k in raw if k not in core]
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]}; valid keys: "
                          f"{', '.join(core + list(own))}")
    cfg = build_section(Config, raw, "")
    cfg.sections = {name: build_section(cls, section_raw.get(name) or {}, name)
                    for name, cls in own.items()}
    cfg.model, head = _build_model(model_raw, task)
    cfg.loss = _build_loss(loss_raw, head)
    _check_values(cfg)
    head.check_config(cfg)
    task.check_config(cfg)
    return cfg


def _check_data(d: DataConfig) -> None:
    from .readers import READERS

    sources = [k for k, v in (("data.dataset", d.dataset), ("data.path", d.path),
                              ("data.train_file", d.train_file or d.dev_file or d.test_file)) if v]
    if len(sources) > 1:
        raise ConfigError(f"give one data source: {' and '.join(sources)} are both set")
    if d.format != "auto" and d.format not in READERS.names():
        raise ConfigError(f"data.format: expected auto or one of {', '.join(READERS.names())}, "
                          f"got {d.format!r}")
    if d.splits is not None:
        if not isinstance(d.splits, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in d.splits.items()):
            raise ConfigError(f"data.splits: expected a mapping like {{train: train, dev: "
                              f"validation}}, got {d.splits!r}")
        unknown = [k for k in d.splits if k not in ("train", "dev", "test")]
        if unknown:
            raise ConfigError(f"data.splits: unknown split {unknown[0]!r}; expected train, dev, "
                              "test")
    if d.remove_entities is not None and not 0 <= d.remove_entities <= 1:
        raise ConfigError(f"data.remove_entities: expected a probability in [0, 1], got "
                          f"{d.remove_entities}")


def _check_values(cfg: Config) -> None:
    _check_data(cfg.data)
    positive = {"model.max_length": cfg.model.max_length, "train.batch_size": cfg.train.batch_size,
                "train.eval_batch_size": cfg.train.eval_batch_size,
                "train.gradient_accumulation_steps": cfg.train.gradient_accumulation_steps,
                "train.epochs": cfg.train.epochs, "train.learning_rate": cfg.train.learning_rate}
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: expected a positive number, got {value}")
    if cfg.model.max_length < 8:
        raise ConfigError(f"model.max_length: expected at least 8, got {cfg.model.max_length}")
    if cfg.train.keep_checkpoints < 1:
        raise ConfigError(f"train.keep_checkpoints: expected at least 1, got {cfg.train.keep_checkpoints}")
    if cfg.train.early_stopping_patience is not None and cfg.train.early_stopping_patience < 1:
        raise ConfigError("train.early_stopping_patience: expected a number of epochs >= 1")
    if cfg.train.checkpoint_every is not None and cfg.train.checkpoint_every < 1:
        raise ConfigError("train.checkpoint_every: expected a number of optimizer steps >= 1")
    if not 0 <= cfg.train.warmup_ratio < 1:
        raise ConfigError(f"train.warmup_ratio: expected a value in [0, 1), got {cfg.train.warmup_ratio}")
    if cfg.model.window_overlap < 0:
        raise ConfigError("model.window_overlap: expected a value >= 0")


def loss_for_overrides(raw: dict, overrides: list[str]) -> dict:
    """The config's loss section as the command line changes it, before the overrides apply.

    ``loss.name=X`` replaces the loss: the file's options of another loss are dropped (those
    given on the command line stay), so ``seqlab train focal.yaml loss.name=ce`` is
    cross-entropy. ``model.head=X`` where the file's loss is unset or ``ce`` (the baseline of
    the default head) gives head X its own default loss, with a one-line notice when the file
    named ``ce`` (the CRF's likelihood, GlobalPointer's multilabel cross-entropy); any other
    loss the file or the command line names is kept, and is an error where the head does not
    take it.
    """
    import sys

    keys = {".".join(parse_override(o)[0]) for o in overrides}
    loss = raw.get("loss")
    loss = dict(loss) if isinstance(loss, dict) else {}
    file_name = loss.get("name")
    kept = {k: v for k, v in loss.items() if k in _HEAD_LOSS_KEYS}
    if "loss.name" in keys:
        new = next(parse_override(o)[1] for o in reversed(overrides)
                   if ".".join(parse_override(o)[0]) == "loss.name")
        if new != file_name and loss:
            return {**raw, "loss": kept}
        return raw
    if "model.head" not in keys or file_name not in (None, "ce"):
        return raw
    from .heads import HEADS

    head_name = next(parse_override(o)[1] for o in reversed(overrides)
                     if ".".join(parse_override(o)[0]) == "model.head")
    if not isinstance(head_name, str) or head_name not in HEADS.names():
        return raw  # config_from_dict says what is wrong
    head = HEADS.get(head_name)
    if head.default_loss == (file_name or "ce"):
        return raw
    if file_name is not None:
        from .errors import first_process

        if first_process():
            why = ("does not apply to" if file_name not in head.allowed_losses() else
                   "is not the default of")
            print(f"seqlab: loss.name {file_name!r} {why} the {head_name} head; training with "
                  f"its default loss, {head.default_loss!r} (name a loss on the command line to "
                  "choose another)", file=sys.stderr)
    return {**raw, "loss": {k: v for k, v in kept.items()
                            if (head.class_weights if k == "class_weight" else head.samples_negatives)}}


# loss keys that belong to the head's training, not to a loss's options: a change of loss keeps them
_HEAD_LOSS_KEYS = ("class_weight", "negatives", "negative_sampling", "negative_temperature")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply ``dotted.key=value`` overrides, validate.

    Raises:
        ConfigError: a missing or unreadable file, invalid YAML, an unknown key, a wrong type.
    """
    raw = read_yaml(path) if path is not None else {}
    try:
        raw = loss_for_overrides(raw, overrides or [])
        raw = apply_overrides(raw, overrides or [])
        return config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def saved_config(raw: dict) -> dict:
    """A ``config.yaml`` written by this or an earlier version, as this version writes it: keys
    added since take their defaults, and the boolean ``eval.allow_nested`` of before ``auto``
    existed reads as what it did (``false``, the old default, is ``auto``: such a run's
    ``seqlab.json`` records no nesting, so it predicts flat as before). Left as it is where it
    does not validate."""
    import copy

    from .errors import SeqlabError

    raw = copy.deepcopy(raw) if isinstance(raw, dict) else {}
    ev = raw.get("eval")
    if isinstance(ev, dict) and isinstance(ev.get("allow_nested"), bool):
        ev["allow_nested"] = "true" if ev["allow_nested"] else "auto"
    try:
        return config_from_dict(raw).to_dict()
    except SeqlabError:
        return raw


def load_run(model_dir: str | Path) -> tuple[type[Task], Run]:
    """A trained run (or its export) and its task.

    Raises:
        SeqlabError: not a seqlab model directory.
    """
    import json

    from .errors import SeqlabError
    from .tasks import Run, get_task

    path = Path(model_dir)
    meta_path = path / "seqlab.json"
    if not meta_path.is_file():
        raise SeqlabError(f"{model_dir}: not a seqlab model directory (no seqlab.json); "
                          "expected the output_dir of `seqlab train`")
    if not any((path / f).is_file() for f in _WEIGHTS):
        raise SeqlabError(f"{model_dir}: this run kept no model weights (trained with "
                          "train.save_model: false, as a study's runs are unless "
                          "study.keep_weights: true); its metrics and predictions are there, and "
                          "`seqlab report` reads them, but evaluating, predicting, serving and "
                          "exporting need the weights")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return get_task(meta["task"]), Run(path, meta, load_config(path / "config.yaml"))


# a model directory's weights: transformers' files (one or sharded), or an ONNX export's
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
            "pytorch_model.bin.index.json", "model.onnx")
