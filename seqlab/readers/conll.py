"""CoNLL column files: a token a line, the tag in ``data.tag_column``; what no other reader
claims is read so (see :func:`seqlab.data.conll.read_conll`)."""

from __future__ import annotations

from ..data.conll import read_conll
from . import Reader, register_reader


@register_reader("conll")
class ConllReader(Reader):
    suffixes = (".conll", ".conllu", ".bio", ".iob", ".bmes", ".tsv", ".txt")

    def read_ner(self, path: str, split: str) -> list:
        return read_conll(path, tag_column=self.options.tag_column)
