"""JSON lines of sentences, a line each: ``{"tokens": [...], "tags": [...]}`` or with an
``"entities"`` list of spans (see :func:`seqlab.data.conll.read_jsonl`); SQuAD-format JSON for
QA."""

from __future__ import annotations

from ..data.conll import read_jsonl
from . import Reader, register_reader


@register_reader("jsonl")
class JsonLinesReader(Reader):
    suffixes = (".jsonl", ".json")

    def read_ner(self, path: str, split: str) -> list:
        return read_jsonl(path)

    def read_qa(self, path: str, split: str) -> list:
        from ..data.qa import read_squad

        return read_squad(path)[0]
