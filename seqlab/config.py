"""Typed configuration: dataclasses, YAML in, validated, with dotted command-line overrides.

Unknown keys are errors that list the valid ones; values are coerced to the field's type (PyYAML
reads ``5e-5`` as a string) or rejected with the key's dotted name.
"""

from __future__ import annotations

import dataclasses
import math
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
    train_file: str | None = None     # or explicit files (CoNLL columns, .jsonl, .parquet,
    dev_file: str | None = None       # .arrow, .csv, a save_to_disk directory)
    test_file: str | None = None
    path: str | None = None           # or a datasets source with its splits: a save_to_disk
                                      # directory or a hub id
    subset: str | None = None         # the hub dataset's config name
    splits: dict[str, str] | None = None  # seqlab split -> the source's (default: train,
                                          # validation or dev, test)
    format: str = "auto"              # the reader (`seqlab datasets` lists them); auto: by suffix
    tokens_column: str = "tokens"     # datasets sources: the words
    tags_column: str = "ner_tags"     # their tags (a ClassLabel sequence, or strings)
    spans_column: str | None = None   # or entity spans {start, end, type} (nested data)
    annotation: str = "complete"      # training data: complete, or partial (a word outside
                                      # every annotated entity is unknown, not O)
    remove_entities: float | None = None  # synthetic missing annotation: each training entity
                                      # removed with this probability (as `seqlab corrupt`),
                                      # after limit; partial annotation: its words unknown,
                                      # complete: O (trained as negatives)
    remove_seed: int = 1              # the removal's seed
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
    label_subwords: str = "first"     # NER, softmax head: train each word's first subword
                                      # (first) or every subword (all: the later ones as I-X)
    head: str | None = None           # the head on the encoder (`seqlab heads`); None: the task's
    # the head's own options (model.<key> in YAML), validated by the head
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    name: str | None = None           # None: the head's default loss
    options: dict[str, Any] = field(default_factory=dict)
    # per-class weights from the training label counts n_c: inverse (1 / n_c) or inverse_sqrt
    # (1 / sqrt(n_c)), scaled to a mean of 1 over training tokens; exclusive with weight
    class_weight: str | None = None
    # span heads: the negative spans trained on, per window: all, or a sample of
    # floor(ratio * words) + 1 of them drawn afresh each step (negative sampling, Li et al. 2021);
    # None: all on complete data, NEGATIVE_RATE on partial data (data.annotation: partial)
    negatives: float | str | None = None
    negative_sampling: str = "uniform"  # uniform, or weighted toward high-scoring negatives
    negative_temperature: float = 1.0   # weighted: probability proportional to exp(score / T)


CLASS_WEIGHTS = ("inverse", "inverse_sqrt")
NEGATIVE_SAMPLING = ("uniform", "weighted")
# The rate of the authors' released code for Li et al. (2021), `--negative_rate 0.7`: a sentence
# of n words trains on floor(0.7 n) + 1 negative spans drawn uniformly among its non-entity spans.
NEGATIVE_RATE = 0.7


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
                                                # dev score, counted once it has left 0 (the best
                                                # epoch's weights are kept)
    log_every: int = 50               # optimizer steps between metrics.jsonl lines
    num_threads: int | None = None    # torch CPU threads (default: torch's choice)
    checkpoint_every: int | None = None  # optimizer steps between checkpoints (besides each
                                         # epoch's end and every checkpoint_minutes)
    checkpoint_minutes: float = 30.0  # minutes of training between checkpoints (0: off)
    keep_checkpoints: int = 2         # newest checkpoints kept in OUTPUT_DIR.incomplete
    resume: str = "no"                # no, yes (continue an .incomplete run), auto (if any)
    on_nonfinite: str = "stop"        # a non-finite loss or gradient norm: stop, or skip the step


@dataclass
class EvalConfig:
    decode: str | None = None         # tagging heads: argmax or viterbi (None: the head's default)
    allow_nested: str = "auto"        # span heads: keep overlapping predicted spans (true),
                                      # make them flat (false), or keep them where the training
                                      # data nests (auto; the run records which)


@dataclass
class Config:
    task: str = "ner"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # the sections a task owns (``qa`` for span QA), by name; read as ``cfg.<name>``
    sections: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str):
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__} has no section {name!r}")

    def to_dict(self) -> dict:
        """The config as YAML would hold it: loss and head options inline in their sections."""
        d = {f.name: dataclasses.asdict(getattr(self, f.name)) if f.name not in ("task", "sections")
             else getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sections"}
        d["model"] = {k: v for k, v in d["model"].items() if k != "options"}
        d["model"].update(self.model.options)
        d["loss"] = {"name": self.loss.name, **self.loss.options}
        if self.loss.class_weight:
            d["loss"]["class_weight"] = self.loss.class_weight
        for key in ("negatives", "negative_sampling", "negative_temperature"):
            value = getattr(self.loss, key)
            if value != getattr(LossConfig, key):
                d["loss"][key] = value
        for name, section in self.sections.items():
            d[name] = dataclasses.asdict(section) if dataclasses.is_dataclass(section) else section
        return d


_CHOICES = {
    "data.scheme": ("auto", "iob1", "iob2", "bioes", "bmes"),
    "data.train_scheme": ("iob2", "bioes"),
    "train.resume": ("no", "yes", "auto"),
    "train.on_nonfinite": ("stop", "skip"),
    "train.eval_precision": ("same", "fp32"),
    "eval.decode": ("argmax", "viterbi"),
    "eval.allow_nested": ("auto", "true", "false"),
    "model.label_subwords": ("first", "all"),
    "data.annotation": ("complete", "partial"),
}

# keys that may change between a checkpoint and its resumption: how long the run is, how it
# checkpoints and logs, and where the pieces stand; anything else changes the run
RESUMABLE_CHANGES = ("train.epochs", "train.max_steps", "train.early_stopping_patience",
                     "train.resume", "train.overwrite",
                     "train.checkpoint_every", "train.checkpoint_minutes",
                     "train.keep_checkpoints", "train.log_every", "train.num_threads",
                     "train.compile", "train.eval_batch_size", "data.data_dir")
# and these too when the checkpoint comes from a run stopped by a non-finite loss (or with
# --change-after-divergence): what recovering from a divergence takes
RECOVERY_CHANGES = ("train.learning_rate", "train.on_nonfinite", "train.max_grad_norm")


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def coerce(key: str, value: Any, tp: Any) -> Any:
    """``value`` as the type ``tp`` (``int | None`` and the like), or a ConfigError naming
    ``key``."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return coerce(key, value, args[0])
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


def build_section(cls: type, raw: Any, prefix: str, choices: dict | None = None) -> Any:
    """A dataclass from a mapping: unknown keys are an error listing the valid ones, values
    coerced to the fields' types, ``choices`` (dotted key -> allowed values) enforced."""
    choices = _CHOICES if choices is None else {**_CHOICES, **choices}
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
            kwargs[name] = build_section(tp, value if value is not None else {}, key, choices)
            continue
        if key in choices and isinstance(value, bool) and "yes" in choices[key]:
            value = "yes" if value else "no"  # YAML reads yes/no as booleans
        elif key in choices and isinstance(value, bool) and "true" in choices[key]:
            value = "true" if value else "false"
        kwargs[name] = coerce(key, value, tp)
        if key in choices and kwargs[name] is not None and kwargs[name] not in choices[key]:
            raise ConfigError(f"{key}: expected one of {', '.join(choices[key])}, "
                              f"got {kwargs[name]!r}")
    return cls(**kwargs)


_MODEL_KEYS = [f.name for f in dataclasses.fields(ModelConfig) if f.name != "options"]


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
    from .losses import build_loss, loss_option_types, loss_registry

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
    try:
        build_loss(name, binary=head.binary_losses,
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
