"""Input readers: one module per input format, picked by name (``data.format``) or by the file's
suffix, so a new format is one new module.

A reader registers itself (``@register_reader("parquet")``) and says which suffixes it takes;
``data.format: auto`` picks the reader of a file's suffix, a directory saved by
``datasets.save_to_disk`` goes to the ``datasets`` reader, and anything else is read as CoNLL
columns. Packages outside seqlab add readers through the ``seqlab.plugins`` entry points, as
they add heads, tasks and losses.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from ..registry import Registry

READERS: Registry[type["Reader"]] = Registry("data.format", __name__)


def register_reader(name: str):
    """Class decorator: ``@register_reader("parquet")`` makes ``data.format: parquet`` work and
    its suffixes read by it."""
    return READERS.register(name)


class Reader:
    """The protocol of an input format.

    ``options`` is the ``data`` section (:class:`seqlab.config.DataConfig`): the column names
    (``tokens_column``, ``tags_column``, ``spans_column``) and whatever else the format needs.
    """

    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]] = ()  # file endings it reads under data.format: auto
    directories: ClassVar[bool] = False        # it reads directories (datasets.save_to_disk)

    def __init__(self, options):
        self.options = options

    def read_ner(self, path: str, split: str) -> list:
        """The NER sentences (:class:`seqlab.data.conll.Sentence`) of one split held in
        ``path``."""
        raise NotImplementedError(f"the {self.name} reader holds no NER data")

    def read_qa(self, path: str, split: str) -> list:
        """The questions (:class:`seqlab.data.qa.QAExample`) of one split held in ``path``."""
        raise NotImplementedError(f"the {self.name} reader holds no QA data")


def reader_for(path: str | Path, fmt: str = "auto") -> type[Reader]:
    """The reader of ``path``: ``fmt`` when it names one, else by suffix (CoNLL columns when no
    reader claims it)."""
    if fmt != "auto":
        return READERS.get(fmt, key="data.format")
    p = Path(path)
    readers = [r for _, r in READERS.items()]
    if p.is_dir():
        for r in readers:
            if r.directories:
                return r
    name = p.name.lower()
    for r in sorted(readers, key=lambda r: -max((len(s) for s in r.suffixes), default=0)):
        if any(name.endswith(s) for s in r.suffixes):
            return r
    return READERS.get("conll")


def format_names() -> list[str]:
    return ["auto", *READERS.names()]
