"""The NER corpus: the configured splits read, checked (nested entities for a head that labels
words, types unseen in training, partial annotation only in training) and labelled for the head;
per-class loss weights from its counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..data.conll import Sentence
from ..data.registry import load_files, load_named, load_source, resolve_scheme
from ..errors import DataError
from ..heads import get_head
from .ner_files import prediction_format


@dataclass
class NerCorpus:
    """Splits of original sentences, their scheme, and the labels the model predicts (tags for
    heads that label words, entity types for span heads)."""

    splits: dict[str, list[Sentence]]
    scheme: str          # the files' scheme
    train_scheme: str    # the model's scheme (tagging heads)
    labels: list[str]
    name: str = "files"


def _types(sentences: Sequence[Sentence], scheme: str) -> set[str]:
    return {t for s in sentences for t, _, _ in s.gold_spans(scheme)}


def first_unseen_type(sentences: Sequence[Sentence], scheme: str, known: set[str]
                      ) -> tuple[str, str, list[str]] | None:
    """``(file:line of its first word, the type, every unseen type)`` for the first entity
    whose type is not in ``known``, or None."""
    extra = sorted(_types(sentences, scheme) - set(known))
    if not extra:
        return None
    for s in sentences:
        for typ, start, _ in s.gold_spans(scheme):
            if typ in extra:
                return s.where(start), typ, extra
    return None


def load_corpus(cfg: Config, labels: list[str] | None = None) -> NerCorpus:
    """Read the configured splits, resolve the scheme, build the label set for the head.

    Raises:
        DataError: no data configured, a missing file, nested entities for a tagging head, or
            a dev/test entity type absent from train.
    """
    d = cfg.data
    head = get_head(cfg.model.head)
    if d.dataset and (d.train_file or d.dev_file or d.test_file):
        raise DataError("give either data.dataset or data.train_file/dev_file/test_file, not both")
    if d.dataset:
        splits, spec = load_named(d.dataset, d.data_dir)
        declared = spec.scheme if d.scheme == "auto" else d.scheme
        name = d.dataset
    elif d.path:
        splits = load_source(d)
        declared, name = d.scheme, Path(d.path).name
    elif d.train_file or d.dev_file or d.test_file:
        splits = load_files(d.train_file, d.dev_file, d.test_file, options=d)
        declared, name = d.scheme, Path(d.train_file or d.dev_file or d.test_file).name
    else:
        raise DataError("no data: set data.dataset (e.g. conll2003), data.path (a datasets "
                        "directory or hub id) or data.train_file")
    fmt = prediction_format(head)
    fmt.check_data(splits, head.name)
    if d.limit and "train" in splits:
        splits["train"] = splits["train"][: d.limit]
    if d.eval_limit:
        for split in ("dev", "test"):
            if split in splits:
                splits[split] = splits[split][: d.eval_limit]
    scheme = resolve_scheme(splits, declared)
    if d.remove_entities is not None and "train" in splits:
        from ..data.corrupt import remove_entities

        splits["train"], _ = remove_entities(splits["train"], scheme, p=d.remove_entities,
                                             seed=d.remove_seed, partial=d.annotation == "partial")
    mark_partial(splits, scheme, d.annotation)
    if labels is None:
        if "train" not in splits:
            raise DataError("no training split: set data.train_file")
        train_types = _types(splits["train"], scheme)
        for split in ("dev", "test"):
            unseen = first_unseen_type(splits.get(split, []), scheme, train_types)
            if unseen:
                where, typ, extra = unseen
                raise DataError(f"{where}: entity type {typ} of the {split} split never occurs in "
                                f"the training data ({split} types absent from training: "
                                f"{', '.join(extra)}); training types: "
                                f"{', '.join(sorted(train_types))}")
        labels = fmt.labels(train_types, cfg.data.train_scheme)
    return NerCorpus(splits, scheme, cfg.data.train_scheme, labels, name)


def mark_partial(splits: dict[str, list[Sentence]], scheme: str, annotation: str) -> None:
    """Partial annotation: with ``data.annotation: partial`` every training word outside an
    annotated entity is unknown (where the file marks no words of its own); evaluation data
    must be complete.

    Raises:
        DataError: a dev or test sentence with unknown words (naming its file and line).
    """
    if annotation == "partial":
        for s in splits.get("train", []):
            if s.known is None:
                s.known = [False] * len(s.tokens)
                for _, a, b in s.gold_spans(scheme):
                    s.known[a:b] = [True] * (b - a)
    for split, sentences in splits.items():
        if split == "train":
            continue
        for s in sentences:
            if s.known is not None and not all(s.known):
                raise DataError(f"{s.where(s.known.index(False))}: the {split} split has words "
                                "whose annotation is unknown; evaluation data must be completely "
                                "annotated (partial annotation is for training only)")


def class_weights(counts: Sequence[int], kind: str) -> list[float]:
    """Per-class weights from label counts: ``1 / n_c`` (``inverse``) or ``1 / sqrt(n_c)``
    (``inverse_sqrt``), scaled so that their mean over the counted tokens is 1. A class never
    seen counts as seen once.

    Example:
        >>> class_weights([90, 10], "inverse")
        [0.5555555555555556, 5.0]
    """
    power = {"inverse": 1.0, "inverse_sqrt": 0.5}[kind]
    raw = [max(n, 1) ** -power for n in counts]
    scale = sum(counts) / sum(n * w for n, w in zip(counts, raw)) if sum(counts) else 1.0
    return [w * scale for w in raw]
