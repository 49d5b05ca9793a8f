"""Tasks: everything the training loop, the CLI, the export and the study know of NER and span QA.

A task is one module in this package (or anywhere, registered with :func:`register_task`) with a
class that subclasses :class:`Task`; ``@register_task("name")`` makes ``task: name`` work in
configs, training, evaluation, prediction, export and the study. The loop (:mod:`seqlab.train`)
only calls the protocol; the CLI owns argparse and hands the task typed options
(:class:`EvaluateOptions`, :class:`PredictOptions`); the study reads finished runs through
:meth:`Task.study_split`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..config import Config
from ..registry import Registry

TASKS: Registry[type[Task]] = Registry("task", __name__)


def _declare_contract(name: str):
    def check(cls) -> None:
        if getattr(cls, "head_contract", None) is not None:
            from ..heads.contracts import register_contract

            register_contract(name, cls.head_contract)
    return check


def register_task(name: str):
    """Class decorator: ``@register_task("ner")``; a task's ``head_contract`` (a
    :class:`~typing.Protocol`) is then what its heads are checked against when they register."""
    return TASKS.register(name, check=_declare_contract(name))


def get_task(name: str) -> type[Task]:
    return TASKS.get(name, key="task")


@dataclass(frozen=True)
class CliOption:
    """A command-line option a task adds to ``seqlab evaluate`` or ``seqlab predict``: the
    arguments of ``argparse``'s ``add_argument``."""

    flags: tuple[str, ...]
    help: str
    kwargs: dict = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.flags[0].lstrip("-").replace("-", "_")


@dataclass
class Run:
    """A trained run (or its export) as prediction sees it: where it is, its ``seqlab.json`` and
    its config."""

    directory: Path
    meta: dict
    config: Config


@dataclass
class EvaluateOptions:
    """``seqlab evaluate``'s options, typed."""

    dataset: str | None = None
    file: str | None = None
    split: str = "test"
    data_dir: str | None = None
    output: str | None = None
    batch_size: int = 64
    bf16: bool = False
    progress: bool = True
    backend: str = "torch"
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the task's own options, by dest


@dataclass
class PredictOptions:
    """``seqlab predict``'s options, typed."""

    files: list[str] = field(default_factory=list)
    output: str | None = None
    batch_size: int = 64
    bf16: bool = False
    progress: bool = False
    backend: str = "torch"
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class RequestError(Exception):
    """A request to ``seqlab serve`` that cannot be answered: its HTTP status and why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Limits:
    """What one request to ``seqlab serve`` may hold."""

    max_texts: int = 64
    max_chars: int = 10_000


class Predictor:
    """A loaded run answering requests (``seqlab serve``): what a request holds, how big each
    item is (for batching by length), and the predictions of a batch of items from many
    requests."""

    form: str = "texts"   # the page's form: "texts" (NER) or "question" (QA)

    def parse(self, payload, limits: Limits) -> list:
        """A request's JSON body as items; :class:`RequestError` (4xx) when it does not fit."""
        raise NotImplementedError

    def size(self, item) -> int:
        return 1

    def predict(self, items: list) -> list:
        """One result per item, in order."""
        raise NotImplementedError

    def respond(self, results: list) -> dict:
        """The JSON answer to one request from its items' results."""
        raise NotImplementedError


@dataclass
class StudySplit:
    """What the study needs of one split of a finished run, read from its files.

    ``counts`` ``(units, k)``: per unit (a sentence, a question) the additive statistics the
    split's primary score is a function of (:attr:`Task.score_of_counts`); ``documents``: each
    unit's document (None: every unit its own); ``calibration``: per token the predicted
    label's probability and whether it was right, and whether the token is in an entity
    (gold or predicted), or None where the run wrote no probabilities; ``per_type``: the
    split's F1 and gold support per entity type, where the task scores types (for a decoding
    read from its own file, whose metrics.json has no per-type figures).
    """

    counts: Any
    documents: list | None = None
    confidence: list[float] | None = None
    correct: list[bool] | None = None
    in_entity: list[bool] | None = None
    per_type: dict | None = None


class Task:
    """The protocol every task implements (defaults where most tasks agree).

    ``result`` below is whatever :meth:`evaluate` returns; only the task reads it (the loop
    asks :meth:`score` and :meth:`summary`).
    """

    name: ClassVar[str]
    primary_metric: ClassVar[str] = "score"   # the name of what :meth:`score` returns
    unit_name: ClassVar[str] = "examples"     # what the study resamples when there are no documents
    default_head: ClassVar[str]
    config_sections: ClassVar[dict[str, type]] = {}  # sections of the config the task owns
    cli_options: ClassVar[dict[str, list[CliOption]]] = {}  # "evaluate"/"predict" -> options
    prediction_ext: str = "txt"               # the predictions file's extension
    pipeline_tag: ClassVar[str | None] = None  # the transformers pipeline its models load in
    title: ClassVar[str] = ""                  # its name in a model card ("Question Answering")
    report_split: ClassVar[str] = "test"       # the split `seqlab report` shows by default
    head_contract: ClassVar[type | None] = None  # a Protocol its heads implement (checked
                                                 # when they register; seqlab.heads.contracts)
    tokenizer: Any = None
    head: Any = None                          # the head instance (seqlab.heads)

    # ------------------------------------------------------------------ config

    @classmethod
    def upgrade_config(cls, raw: dict) -> dict:
        """A raw config mapping with deprecated keys moved to their new places."""
        return raw

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """Task-specific checks of a built config (raise ConfigError naming the key)."""

    @classmethod
    def model_inputs(cls, model_config) -> list[str]:
        """The inputs its models take (the ONNX export's inputs)."""
        return ["input_ids", "attention_mask"]

    # ------------------------------------------------------------------ training

    @classmethod
    def from_config(cls, cfg: Config) -> Task:
        """Read the configured corpus and the tokenizer (checks that can fail come first)."""
        raise NotImplementedError

    def new_model(self) -> torch.nn.Module:
        """The model to fine-tune: the head on the configured encoder."""
        return self.head.new_model()

    def has_split(self, split: str) -> bool:
        raise NotImplementedError

    def features(self, split: str):
        """A dataset of model inputs for ``split``, each row with a ``length``."""
        raise NotImplementedError

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def compute_loss(self, model, batch: dict[str, torch.Tensor], *,
                     num_items_in_batch=None) -> torch.Tensor:
        """The loss of a batch; with ``num_items_in_batch``, its sum over that count."""
        return self.head.loss(model, batch, num_items_in_batch)

    def count_items(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """How many items the loss of ``batch`` sums over (for exact gradient accumulation)."""
        return self.head.count_items(batch)

    def evaluate(self, model, split: str, *, device=None, out_file: Path | None = None,
                 progress: bool = True, accelerator=None, dtype: torch.dtype | None = None
                 ) -> dict:
        """Predict ``split``, score it, write the predictions to ``out_file``. With an
        ``accelerator`` of several processes, each predicts its share (:func:`shard_of`) and every
        process scores the gathered whole (:func:`gather_shards`); ``dtype``: an autocast
        precision (bfloat16 after bf16 training), None for the model's own."""
        raise NotImplementedError

    def score(self, result: dict) -> float:
        """The number that picks the best epoch (higher is better)."""
        raise NotImplementedError

    def summary(self, result: dict) -> dict:
        """The figures logged for an evaluation."""
        raise NotImplementedError

    def report(self, result: dict) -> str:
        """What ``seqlab train`` prints at the end."""
        return ""

    def save_extra(self, directory: Path) -> None:
        """Everything beside the model and tokenizer that prediction needs (``seqlab.json``)."""
        raise NotImplementedError

    @classmethod
    def card_metrics(cls, split_metrics: dict) -> list[tuple[str, float, str]]:
        """``(type, value, name)`` of each figure a model card shows for one split of
        ``metrics.json`` (by default its top-level numbers as they are)."""
        return [(k, v, k) for k, v in split_metrics.items()
                if isinstance(v, float) and not isinstance(v, bool)]

    # ------------------------------------------------------------------ the CLI

    @classmethod
    def cli_evaluate(cls, opts: EvaluateOptions, run: Run) -> int:
        """``seqlab evaluate`` on a trained run of this task."""
        raise NotImplementedError

    @classmethod
    def cli_predict(cls, opts: PredictOptions, run: Run) -> int:
        """``seqlab predict`` on a trained run of this task."""
        raise NotImplementedError

    @classmethod
    def predictor(cls, run: Run, opts: PredictOptions) -> Predictor:
        """The run loaded for ``seqlab serve``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the study

    @classmethod
    def study_metrics(cls, split_metrics: dict) -> dict:
        """From one split of ``metrics.json``: ``{"f1", "precision", "recall", "per_type":
        {type: f1}, "support": {type: n}}`` (a task without some of them leaves them out)."""
        raise NotImplementedError

    @classmethod
    def prediction_file(cls, run_dir: Path, split: str, decoding: str | None = None
                        ) -> Path | None:
        """The predictions file a finished run wrote of ``split`` (of ``decoding``, when it
        wrote several; gzipped or not: the study keeps them gzipped), or None.

        The file is ``predictions_<split>[.<decoding>].<ext>[.gz]``, whatever the task's
        extension: the report, the study and the tests find it here.
        """
        stem = f"predictions_{split}" + (f".{decoding}" if decoding else "")
        found = []
        for path in Path(run_dir).glob(f"{stem}.*"):
            rest = path.name[len(stem) + 1:].removesuffix(".gz")
            if rest and "." not in rest and path.is_file():
                found.append(path)
        # the plain file before its gzipped copy, then by name
        return min(found, key=lambda p: (p.suffix == ".gz", p.name), default=None)

    @classmethod
    def study_split(cls, run_dir: Path, split: str, decoding: str | None = None
                    ) -> StudySplit | None:
        """The per-unit counts (and calibration data) of a finished run's split, read from
        its predictions file (of ``decoding``, when the run wrote several); None when the run
        kept none."""
        return None

    @classmethod
    def study_scores(cls) -> dict:
        """The scores the study bootstraps, each a function of summed counts ``(..., k) ->
        (...)`` (vectorised over leading axes); the first is the primary one (``f1``)."""
        raise NotImplementedError

    @classmethod
    def report_sections(cls, data: dict) -> tuple[list[str], dict]:
        """The task's sections of ``seqlab report``'s page (HTML, the scores first) and the
        figures they show, from :func:`seqlab.report.read_run`'s ``data``."""
        from ..errors import SeqlabError

        raise SeqlabError(f"seqlab report: task {cls.name!r} has no report page")

    @classmethod
    def study_documents(cls, cfg: Config, split: str) -> list | None:
        """Each unit's document in ``split`` when the data says (read from the data), else
        None."""
        return None


def shard_of(n: int, accelerator) -> list[int]:
    """The indices of ``n`` items this process evaluates: every ``num_processes``-th one."""
    if accelerator is None or accelerator.num_processes == 1:
        return list(range(n))
    return list(range(accelerator.process_index, n, accelerator.num_processes))


def gather_shards(indices: list[int], values: list, n: int, accelerator) -> list:
    """Every process's ``(index, value)`` pairs gathered into one list in index order; each of
    the ``n`` items exactly once."""
    if accelerator is None or accelerator.num_processes == 1:
        return values
    from accelerate.utils import gather_object

    by_index = dict(gather_object(list(zip(indices, values))))
    if sorted(by_index) != list(range(n)):
        raise RuntimeError(f"evaluation gathered {len(by_index)} of {n} items")
    return [by_index[i] for i in range(n)]
