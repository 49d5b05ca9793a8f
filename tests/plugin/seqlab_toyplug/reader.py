"""An input format: one sentence a line, ``word/TAG`` pairs separated by spaces."""

from pathlib import Path

from seqlab.data.conll import Sentence
from seqlab.errors import DataError
from seqlab.readers import Reader, register_reader


@register_reader("pipes")
class PipesReader(Reader):
    suffixes = (".pipes",)

    def read_ner(self, path, split):
        out = []
        for k, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
            pairs = [w.rsplit("/", 1) for w in line.split()]
            if any(len(p) != 2 for p in pairs):
                raise DataError("expected word/TAG pairs", str(path), k)
            out.append(Sentence([w for w, _ in pairs], [t for _, t in pairs], line=k,
                                path=str(path)))
        return out
