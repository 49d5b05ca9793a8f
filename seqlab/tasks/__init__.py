"""Tasks: everything the training loop, the CLI and the study know of NER and span QA.

Every task implements :class:`Task`, and :func:`get_task` maps a config's ``task:`` to its class.
The loop (:mod:`seqlab.train`) only calls the protocol; the CLI only dispatches to it. A new task
is one new module here and one line in :func:`get_task`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from ..config import Config
from ..errors import ConfigError


class Task(Protocol):
    """What a task supplies. ``result`` below is whatever :meth:`evaluate` returns; only the task
    reads it (the loop asks :meth:`score` and :meth:`summary`)."""

    primary_metric: str      # the name of what :meth:`score` returns, for messages
    prediction_ext: str      # the predictions file's extension
    tokenizer: Any

    @classmethod
    def from_config(cls, cfg: Config) -> Task:
        """Read the configured corpus and the tokenizer (checks that can fail come first)."""

    def new_model(self) -> torch.nn.Module:
        """The model to fine-tune, with the task's head on the configured encoder."""

    def has_split(self, split: str) -> bool: ...

    def features(self, split: str):
        """A dataset of model inputs for ``split``, each row with a ``length``."""

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]: ...

    def compute_loss(self, model, batch: dict[str, torch.Tensor], *,
                     num_items_in_batch=None) -> torch.Tensor:
        """The loss of a batch; with ``num_items_in_batch``, its sum over that count."""

    def count_items(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """How many items the loss of ``batch`` sums over (for exact gradient accumulation)."""

    def evaluate(self, model, split: str, *, device=None, out_file: Path | None = None,
                 progress: bool = True, accelerator=None, dtype: torch.dtype | None = None
                 ) -> dict:
        """Predict ``split``, score it, write the predictions to ``out_file``. With an
        ``accelerator`` of several processes, each predicts its share (:func:`shard_of`) and every
        process scores the gathered whole (:func:`gather_shards`); ``dtype``: an autocast
        precision (bfloat16 after bf16 training)."""

    def score(self, result: dict) -> float:
        """The number that picks the best epoch (higher is better)."""

    def summary(self, result: dict) -> dict:
        """The figures logged for an evaluation."""

    def report(self, result: dict) -> str:
        """What ``seqlab train`` prints at the end."""

    def save_extra(self, directory: Path) -> None:
        """Everything beside the model and tokenizer that prediction needs (``seqlab.json``)."""

    @staticmethod
    def cli_evaluate(args, meta: dict, cfg: Config) -> int:
        """``seqlab evaluate`` on a trained run of this task."""

    @staticmethod
    def cli_predict(args, meta: dict, cfg: Config) -> int:
        """``seqlab predict`` on a trained run of this task."""


def get_task(name: str) -> type[Task]:
    from .ner import NerTask
    from .qa import QATask

    tasks: dict[str, type[Task]] = {"ner": NerTask, "qa": QATask}
    if name not in tasks:
        raise ConfigError(f"task: expected one of {', '.join(tasks)}, got {name!r}")
    return tasks[name]



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
