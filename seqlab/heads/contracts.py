"""What a head implements for the task it serves, beyond :class:`seqlab.heads.Head`: one
:class:`~typing.Protocol` a task, checked when a head registers (:func:`check_contract`).

A head names the tasks it serves (``Head.tasks``); each task's protocol is declared here for
seqlab's own tasks and by :func:`register_contract` for a plug-in task (a :class:`Task` with a
``head_contract``). A head is refused at registration, naming what it misses, when it leaves a
protocol's method as :class:`Head`'s placeholder or takes other parameters than the protocol
passes.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

if TYPE_CHECKING:
    from . import SentencePrediction


class NerHeadContract(Protocol):
    """A NER head: from a window's words and gold to training targets and batches; prediction
    in three steps over the windows of many sentences (the task batches them by length)."""

    #: what it predicts from: ``"tags"`` (a label per word) or ``"spans"`` (typed spans,
    #: nested ones included); the task writes and scores its predictions in that format
    target: ClassVar[str]
    targets: ClassVar[tuple[str, ...]] = ("tags", "spans")  # the values ``target`` may take

    def new_model(self) -> torch.nn.Module:
        """This head, freshly initialised, on the configured encoder."""

    @classmethod
    def load_model(cls, directory: str | Path, meta: dict) -> torch.nn.Module:
        """A trained model saved by ``save_pretrained`` in ``directory``."""

    def window_targets(self, feature: dict, gold: Sequence, n_words: int) -> dict:
        """The training targets of one window (``feature``: its subwords, ``word_index`` and
        ``window``) from the sentence's gold (label ids a word, or ``(type id, start, end)``
        spans) and its length in words."""

    def collate(self, rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
        """A batch of windows' features and targets, padded."""

    def start_prediction(self, windows: list[list[tuple[int, int]]]) -> Any:
        """A fresh prediction state for sentences split into ``windows`` (word ranges)."""

    def collect_batch(self, state: Any, outputs, chunk: list[tuple[int, int, dict]],
                      keep: torch.Tensor) -> None:
        """Keep what the model ``outputs`` for a batch of windows (``chunk``: sentence, window,
        feature each; ``keep`` marks each word's first subword)."""

    def finish_prediction(self, state: Any, windows, lengths: list[int], *,
                          all_decodings: bool = False) -> dict[str, list[SentencePrediction]]:
        """Each sentence's prediction, per decoding (the configured one first)."""


class QAHeadContract(Protocol):
    """A span QA head: the best answer of one window from the model's outputs (the task merges
    the windows of a question)."""

    def new_model(self) -> torch.nn.Module:
        """This head, freshly initialised, on the configured encoder."""

    @classmethod
    def load_model(cls, directory: str | Path, meta: dict) -> torch.nn.Module:
        """A trained model saved by ``save_pretrained`` in ``directory``."""

    def window_answer(self, outputs, row: int, feature: dict) -> tuple:
        """``((start, end, score) or None, no-answer score)`` of window ``row`` of a batch,
        ``start``/``end`` as subword positions of ``feature``."""


# seqlab's own tasks' protocols; a plug-in task adds its own (register_contract)
CONTRACTS: dict[str, type] = {"ner": NerHeadContract, "qa": QAHeadContract}


def register_contract(task: str, protocol: type) -> None:
    """Declare what a head of ``task`` implements (a :class:`~typing.Protocol`)."""
    CONTRACTS[task] = protocol


def contract_methods(protocol: type) -> dict[str, Any]:
    """The methods a protocol declares, by name (its own, not :class:`Protocol`'s)."""
    out = {}
    for name, value in vars(protocol).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (classmethod, staticmethod)):
            out[name] = value.__func__
        elif inspect.isfunction(value):
            out[name] = value
    return out


def _takes(impl, spec) -> list[str]:
    """The parameters of ``spec`` (a protocol's method) that ``impl`` cannot take."""
    try:
        have = inspect.signature(impl).parameters
    except (TypeError, ValueError):
        return []
    kinds = {p.kind for p in have.values()}
    want = list(inspect.signature(spec).parameters.values())[1:]  # self / cls aside
    positional = [p for p in have.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if positional and positional[0].name in ("self", "cls"):
        positional = positional[1:]
    missing = []
    n_positional = sum(p.kind == p.POSITIONAL_OR_KEYWORD for p in want)
    if len(positional) < n_positional and inspect.Parameter.VAR_POSITIONAL not in kinds:
        missing += [p.name for p in want[len(positional):n_positional]]
    for p in want:
        if p.kind == p.KEYWORD_ONLY and p.name not in have and \
                inspect.Parameter.VAR_KEYWORD not in kinds:
            missing.append(p.name)
    return missing


def check_contract(cls, task: str, placeholder: type) -> None:
    """Refuse head ``cls`` where it does not meet ``task``'s protocol: a method missing or left
    as ``placeholder``'s (:class:`Head`'s), one that takes fewer parameters than the protocol
    passes, or a ``target`` outside the protocol's ``targets``.

    Raises:
        TypeError: naming the head, the task and what is wrong.
    """
    protocol = CONTRACTS.get(task)
    if protocol is None:
        return  # a task that declares no contract
    missing, wrong = [], []
    for name, spec in contract_methods(protocol).items():
        impl = getattr(cls, name, None)
        base = getattr(placeholder, name, None)
        if not callable(impl) or impl is base or \
                getattr(impl, "__func__", None) is getattr(base, "__func__", object()):
            missing.append(name)
        elif lacks := _takes(impl, spec):
            wrong.append(f"{name} (takes no {', '.join(lacks)})")
    if missing:
        raise TypeError(f"head {cls.__name__} declares task {task!r} but does not implement "
                        f"{', '.join(missing)}")
    if wrong:
        raise TypeError(f"head {cls.__name__} declares task {task!r} but its methods do not take "
                        f"the protocol's parameters: {'; '.join(wrong)}")
    targets = getattr(protocol, "targets", None)
    if targets and getattr(cls, "target", None) not in targets:
        raise TypeError(f"head {cls.__name__}: target must be one of {', '.join(targets)}, "
                        f"got {getattr(cls, 'target', None)!r}")
