"""Heads: what sits on the encoder, how it is trained, and how its output becomes an answer.

A head is one module in this package (or anywhere, registered with :func:`register_head`) that
owns building itself on the encoder and loading itself back, which losses apply to it, its
loss on a batch, decoding its output, and the names of what its model returns (the ONNX
export's outputs). The loop, the CLI, the study, the export and :mod:`seqlab.hf` ask this
registry and the :class:`Head` protocol, never a head's name.

NER heads (``task: ner``) come in two kinds, said by :attr:`Head.target`:

* ``"tags"``: a label per word (``softmax``, ``crf``); they share the word-level machinery of
  :class:`seqlab.heads.tokens.TokenHead`;
* ``"spans"``: a score per candidate span and entity type (``global_pointer``), which can
  represent nested entities.

Span QA heads (``task: qa``): ``pointer`` and ``tagging``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import ConfigError
from ..registry import Registry

HEADS: Registry[type[Head]] = Registry("model.head", __name__)


def check_head(cls) -> None:
    """Refuse a head that does not meet the contract of each task it declares
    (:mod:`seqlab.heads.contracts`: the methods left as :class:`Head`'s placeholders or missing,
    parameters the protocol passes that it does not take, a ``target`` of no format).

    Raises:
        TypeError: naming the head, the task and what is missing.
    """
    from .contracts import check_contract

    if not (isinstance(cls, type) and issubclass(cls, Head)):
        raise TypeError(f"a registered head is a subclass of seqlab.heads.Head, got {cls!r}")
    for task in cls.tasks:
        check_contract(cls, task, Head)


def register_head(name: str):
    """Class decorator: ``@register_head("crf")`` makes ``model.head: crf`` work everywhere;
    the head must meet the contract of each task it declares (:mod:`seqlab.heads.contracts`)."""
    return HEADS.register(name, check=check_head)


def get_head(name: str, *, key: str = "model.head") -> type[Head]:
    return HEADS.get(name, key=key)


class Head:
    """The protocol every head implements; class attributes describe it to the config.

    An instance is made per task with the resolved config and the labels it predicts (tag
    labels for ``"tags"`` heads, entity types for ``"spans"`` heads, none for QA heads).
    """

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]] = ("ner",)
    target: ClassVar[str] = "tags"            # NER: "tags" (a label per word) or "spans"
    options: ClassVar[type | None] = None     # a dataclass of its model.* options, if any
    default_loss: ClassVar[str] = "ce"
    losses: ClassVar[tuple[str, ...] | None] = None  # the losses that apply (None: every
                                                     # registered loss)
    binary_losses: ClassVar[bool] = False     # registered losses apply in their binary form
    class_weights: ClassVar[bool] = False     # loss.class_weight applies
    samples_negatives: ClassVar[bool] = False  # loss.negatives (negative span sampling) applies
    decodes: ClassVar[tuple[str, ...]] = ()   # eval.decode values it accepts
    default_decode: ClassVar[str | None] = None
    output_names: ClassVar[tuple[str, ...]] = ("logits",)  # what its model returns, in order
    in_transformers: ClassVar[bool] = False   # its model is a transformers class (loads in
                                              # transformers.pipeline without seqlab)
    subword_labels: ClassVar[bool] = False    # model.label_subwords: all applies
    data_nested: bool = False                 # its training data has nested or overlapping
                                              # entities (set by the task, or from the run)
    partial: bool = False                     # it trains from partial annotation (set by the
                                              # task: some words are unknown, not O)
    loss_fn: Any = None                       # its loss module (:meth:`build_loss`, once)

    def __init__(self, cfg, labels: list[str] | None = None):
        self.cfg = cfg
        self.labels = list(labels or [])
        self.opts = self.options(**cfg.model.options) if self.options is not None else None

    # ------------------------------------------------------------------ config

    @classmethod
    def allowed_losses(cls) -> tuple[str, ...]:
        """The losses that apply: :attr:`losses`, else every registered loss with the form this
        head takes (class indices, or same-shaped 0/1 targets for :attr:`binary_losses`)."""
        if cls.losses is not None:
            return cls.losses
        from ..losses import loss_registry

        return tuple(n for n, c in sorted(loss_registry.items())
                     if (c.binary_form if cls.binary_losses else c.multiclass))

    @classmethod
    def check_loss(cls, name: str) -> None:
        """Raises ConfigError when loss ``name`` does not apply to this head."""
        from ..losses import loss_registry

        allowed = cls.allowed_losses()
        if name not in loss_registry and name not in allowed:
            raise ConfigError(f"loss.name: unknown loss {name!r}; known losses: "
                              f"{', '.join(sorted(loss_registry))}; for the {cls.name} head: "
                              f"{', '.join(allowed)}")
        if name not in allowed:
            raise ConfigError(f"loss.name: {name!r} does not apply to the {cls.name} head; "
                              f"losses for it: {', '.join(allowed)}")

    @classmethod
    def check_config(cls, cfg) -> None:
        """Checks of the other sections this head cares about (``eval.decode``)."""
        if getattr(cfg.model, "label_subwords", "first") != "first" and not cls.subword_labels:
            raise ConfigError(f"model.label_subwords: the {cls.name} head labels each word's "
                              "first subword only; drop the key or use model.head: softmax")
        if getattr(cfg.model, "label_subwords", "first") == "all" and cfg.data.train_scheme != "iob2":
            raise ConfigError("model.label_subwords: all gives a word's later subwords I-X, which "
                              "needs data.train_scheme: iob2")
        if cfg.eval.decode is not None and cfg.eval.decode not in cls.decodes:
            raise ConfigError(f"eval.decode: the {cls.name} head decodes "
                              f"{' or '.join(cls.decodes) or 'in one way only'}; "
                              f"drop the key or choose {', '.join(cls.decodes) or 'none'}")

    @property
    def decode(self) -> str | None:
        return self.cfg.eval.decode or self.default_decode

    # ------------------------------------------------------------------ model

    def new_model(self) -> torch.nn.Module:
        """The model to fine-tune: this head, freshly initialised, on the configured encoder."""
        raise NotImplementedError

    @classmethod
    def load_model(cls, directory: str | Path, meta: dict) -> torch.nn.Module:
        """A trained model saved by ``save_pretrained`` in ``directory``."""
        raise NotImplementedError

    def meta(self) -> dict:
        """What prediction needs to rebuild this head (written into ``seqlab.json``)."""
        return {"head": self.name, "head_options": dict(self.cfg.model.options),
                "decode": self.decode}

    # ------------------------------------------------------------------ loss

    @classmethod
    def make_loss(cls, name: str, options: dict):
        """Loss ``name`` as a module for this head (in its binary form for span scores)."""
        from ..losses import build_loss

        opts = dict(options)
        if cls.binary_losses:
            opts["binary"] = True
        return build_loss(name, **opts)

    def build_loss(self, options: dict | None = None):
        """Build the head's loss once, from the config (``options`` replace the configured
        options: class weights the task counted), and keep it as :attr:`loss_fn`."""
        self.loss_fn = self.make_loss(self.cfg.loss.name,
                                      self.cfg.loss.options if options is None else options)
        return self.loss_fn

    def mask_unknown(self, targets: dict, feature: dict, known: list[bool]) -> dict:
        """A window's training targets (:meth:`window_targets`) with the sentence's unknown
        words (``known[w]`` false: partial annotation) taken out of what counts as a negative.

        Raises:
            DataError: this head cannot train from partial annotation.
        """
        from ..errors import DataError

        raise DataError(f"the {self.name} head cannot train from partial annotation "
                        "(data.annotation: partial); heads that can: softmax, crf, "
                        "global_pointer")

    def loss(self, model, batch: dict[str, torch.Tensor], num_items_in_batch=None
             ) -> torch.Tensor:
        """The loss of a batch under :attr:`loss_fn`; with ``num_items_in_batch``, its sum
        divided by that count."""
        out = model(**model_inputs(batch))
        return self.loss_fn(out.logits, batch["labels"], num_items_in_batch)

    def count_items(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """How many items the loss of ``batch`` sums over (for exact gradient accumulation)."""
        return self.loss_fn.count_items(batch["labels"])

    # ------------------------------------------------------------------ the Trainer

    @classmethod
    def accepts_outputs(cls, outputs) -> bool:
        """Whether a model's ``outputs`` are this head's (:func:`seqlab.hf.loss_function`)."""
        return False

    @classmethod
    def trainer_loss(cls, loss_fn, outputs, labels: torch.Tensor, num_items_in_batch=None):
        """The loss from what ``transformers.Trainer`` hands ``compute_loss_func``."""
        return loss_fn(outputs["logits"], labels.to(outputs["logits"].device), num_items_in_batch)


@dataclass
class SentencePrediction:
    """One sentence as a NER head predicts it: the entities ``(type, start, end, score)`` over
    words (``end`` exclusive; score in [0, 1]) and, from heads that label words, each word's tag
    and the probability of that tag."""

    entities: list[tuple[str, int, int, float]]
    tags: list[str] | None = None
    probs: list[float] | None = None


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The keys of a batch that the encoder takes."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}


def head_for_outputs(outputs, task: str | None = None) -> type[Head]:
    """The registered head whose model returns ``outputs`` (the first that accepts them)."""
    for _, head in HEADS.items():
        if (task is None or task in head.tasks) and head.accepts_outputs(outputs):
            return head
    raise ValueError("model outputs match no registered head (expected logits, or "
                     "start_logits and end_logits)")
