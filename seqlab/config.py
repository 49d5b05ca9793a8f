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
