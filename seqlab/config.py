"""Typed configuration: dataclasses, YAML in, validated, with dotted command-line overrides.

Unknown keys are errors that list the valid ones; values are coerced to the field's type (PyYAML
reads ``5e-5`` as a string) or rejected with the key's dotted name.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml

from .errors import ConfigError


@dataclass
class DataConfig:
    dataset: str | None = None        # a named dataset (see `seqlab datasets`)
    data_dir: str | None = None       # else $SEQLAB_DATA
    train_file: str | None = None     # or explicit files (CoNLL columns or .jsonl)
    dev_file: str | None = None
    test_file: str | None = None
    tag_column: int = -1              # tag column of CoNLL files (negative: from the end)
    scheme: str = "auto"              # scheme of the files: auto, iob1, iob2, bioes, bmes
    train_scheme: str = "iob2"        # scheme the model learns: iob2 or bioes
    limit: int | None = None          # keep only the first N training examples
    eval_limit: int | None = None     # keep only the first N dev/test examples
    train_split: str = "train"        # QA: which splits to use (cmrc2018: trial, dev)
    eval_split: str = "dev"


@dataclass
class ModelConfig:
    encoder: str = "minilm-l6"        # minilm-l6, a local transformers directory, or a hub id
    max_length: int = 128             # subwords per model input, special tokens included
    window_overlap: int = 32          # NER: subwords shared by consecutive windows


@dataclass
class LossConfig:
    name: str = "ce"
    options: dict[str, Any] = field(default_factory=dict)
    # per-class weights from the training label counts n_c: inverse (1 / n_c) or inverse_sqrt
    # (1 / sqrt(n_c)), scaled to a mean of 1 over training tokens; exclusive with weight
    class_weight: str | None = None


CLASS_WEIGHTS = ("inverse", "inverse_sqrt")


@dataclass
class TrainConfig:
    epochs: float = 3.0
    batch_size: int = 16
    eval_batch_size: int = 64
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    bf16: bool = False                # bfloat16 autocast for training
    compile: bool = False             # torch.compile the model for training (eval stays eager)
    eval_precision: str = "same"      # evaluate as trained (same), or in float32 (fp32)
    seed: int = 42
    output_dir: str = "runs/default"
    overwrite: bool = False           # replace an existing output_dir
    save_model: bool = True           # write the weights and tokenizer (a study may not need them)
    group_by_length: bool = True      # batches of similar length (little padding)
    max_steps: int | None = None      # stop after this many optimizer steps
    early_stopping_patience: int | None = None  # stop after this many epochs without a better
                                                # dev score (the best epoch's weights are kept)
    log_every: int = 50               # optimizer steps between metrics.jsonl lines
    num_threads: int | None = None    # torch CPU threads (default: torch's choice)
    checkpoint_every: int | None = None  # optimizer steps between checkpoints (besides each
                                         # epoch's end and every checkpoint_minutes)
    checkpoint_minutes: float = 30.0  # minutes of training between checkpoints (0: off)
    keep_checkpoints: int = 2         # newest checkpoints kept in OUTPUT_DIR.incomplete
    resume: str = "no"                # no, yes (continue an .incomplete run), auto (if any)
    on_nonfinite: str = "stop"        # a non-finite loss or gradient norm: stop, or skip the step


@dataclass
class QAConfig:
    head: str = "pointer"             # pointer (start/end logits) or tagging (B/I over context)
    doc_stride: int = 128
    max_query_length: int = 64
    max_answer_length: int = 30
    n_best: int = 20
    null_threshold: float = 0.0       # SQuAD v2: predict "" when null score - best > this
    version_2: bool = False           # allow unanswerable questions


@dataclass
class Config:
    task: str = "ner"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    qa: QAConfig = field(default_factory=QAConfig)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["loss"] = {"name": self.loss.name, **self.loss.options}
        if self.loss.class_weight:
            d["loss"]["class_weight"] = self.loss.class_weight
        return d


_CHOICES = {
    "task": ("ner", "qa"),
    "data.scheme": ("auto", "iob1", "iob2", "bioes", "bmes"),
    "data.train_scheme": ("iob2", "bioes"),
    "qa.head": ("pointer", "tagging"),
    "train.resume": ("no", "yes", "auto"),
    "train.on_nonfinite": ("stop", "skip"),
    "train.eval_precision": ("same", "fp32"),
}

# train.* keys that may change between a checkpoint and its resumption: how long the run is,
# how it checkpoints and logs, and where the pieces stand; anything else changes the run
RESUMABLE_CHANGES = ("train.epochs", "train.max_steps", "train.early_stopping_patience", "train.resume", "train.overwrite",
                     "train.checkpoint_every", "train.checkpoint_minutes",
                     "train.keep_checkpoints", "train.log_every", "train.num_threads",
                     "train.compile", "train.eval_batch_size", "data.data_dir")


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0])
    if value is None:
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got null")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, float) and value.is_integer())):
            if isinstance(value, str):
                try:
                    return int(value)
                except ValueError:
                    pass
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]}; valid keys"
                          f"{' under ' + prefix if prefix else ''}: {', '.join(names)}")
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value if value is not None else {}, key)
        else:
            if key in _CHOICES and isinstance(value, bool) and "yes" in _CHOICES[key]:
                value = "yes" if value else "no"  # YAML reads yes/no as booleans
            kwargs[name] = _coerce(key, value, tp)
            if key in _CHOICES and kwargs[name] not in _CHOICES[key]:
                raise ConfigError(f"{key}: expected one of {', '.join(_CHOICES[key])}, "
                                  f"got {kwargs[name]!r}")
    return cls(**kwargs)


def _build_loss(raw: Any) -> LossConfig:
    from .losses import available_losses, build_loss, loss_options

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"loss: expected a mapping like {{name: focal, gamma: 2.0}}, got {raw!r}")
    raw = dict(raw)
    name = str(raw.pop("name", "ce"))
    class_weight = raw.pop("class_weight", None)
    if class_weight is not None and class_weight not in CLASS_WEIGHTS:
        raise ConfigError(f"loss.class_weight: expected one of {', '.join(CLASS_WEIGHTS)} or null, "
                          f"got {class_weight!r}")
    if class_weight is not None and raw.get("weight") is not None:
        raise ConfigError("loss: give either loss.weight or loss.class_weight, not both")
    if name not in available_losses():
        raise ConfigError(f"loss.name: unknown loss {name!r}; known losses: "
                          f"{', '.join(available_losses())}")
    valid = [o for o in loss_options(name) if o not in ("ignore_index", "reduction", "binary")]
    for key in raw:
        if key not in valid:
            raise ConfigError(f"unknown config key loss.{key} for loss {name!r}; valid keys: "
                              f"name, {', '.join(valid)}")
    options = {}
    for key, value in raw.items():
        if key == "form":
            options[key] = _coerce(f"loss.{key}", value, str)
        elif key == "weight":
            if value is not None and (not isinstance(value, list) or
                                      not all(isinstance(v, (int, float)) for v in value)):
                raise ConfigError(f"loss.weight: expected a list of numbers, got {value!r}")
            options[key] = value
        elif key == "alpha" and value is None:
            options[key] = None
        else:
            options[key] = _coerce(f"loss.{key}", value, float)
    try:
        build_loss(name, **{k: v for k, v in options.items() if k != "weight"})
    except ValueError as exc:
        raise ConfigError(f"loss: {exc}") from None
    return LossConfig(name=name, options=options, class_weight=class_weight)


def config_from_dict(raw: dict) -> Config:
    """Build and validate a :class:`Config` from a plain mapping (as read from YAML)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
    raw = dict(raw)
    loss_raw = raw.pop("loss", None)
    cfg = _build(Config, raw, "")
    cfg.loss = _build_loss(loss_raw)
    _check_values(cfg)
    return cfg


def _check_values(cfg: Config) -> None:
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
    if cfg.task == "qa":
        q = cfg.qa
        if q.max_query_length < 1 or q.doc_stride < 0:
            raise ConfigError("qa.max_query_length: expected >= 1, qa.doc_stride: expected >= 0")
        room = cfg.model.max_length - q.max_query_length - 3  # [CLS] question [SEP] context [SEP]
        if room <= q.doc_stride:
            raise ConfigError(
                f"qa.doc_stride: {q.doc_stride} leaves windows no room to advance: model.max_length "
                f"{cfg.model.max_length} - qa.max_query_length {q.max_query_length} - 3 special "
                f"tokens = {room} context subwords, which must be more than qa.doc_stride")
        if cfg.loss.class_weight:
            raise ConfigError("loss.class_weight applies to NER (task: ner)")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"loss.gamma=1"`` -> ``(["loss", "gamma"], 1)``; the value is read as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected dotted.key=value, e.g. train.seed=7")
    key, _, text = item.partition("=")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = dict(raw or {})
    for item in overrides:
        path, value = parse_override(item)
        node = raw
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
            node[part] = dict(nxt)
            node = node[part]
        node[path[-1]] = value
    return raw


def read_yaml(path: str | Path, what: str = "config") -> dict:
    """A YAML file holding a mapping.

    Raises:
        ConfigError: a missing file, invalid YAML (with its line), not UTF-8, not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply ``dotted.key=value`` overrides, validate.

    Raises:
        ConfigError: a missing or unreadable file, invalid YAML, an unknown key, a wrong type.
    """
    raw = read_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    try:
        return config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def changed_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config mappings."""
    out = []
    for key in sorted(set(a) | set(b)):
        dotted = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += changed_keys(va, vb, dotted + ".")
        elif va != vb:
            out.append(dotted)
    return out


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
