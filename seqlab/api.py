"""The Python API of a trained run: load it once, predict texts, get what ``seqlab predict``
writes.

    >>> labeller = seqlab.load("runs/conll2003-ce")                      # doctest: +SKIP
    >>> labeller.predict(["Peter Blackburn flew to Brussels."])         # doctest: +SKIP
    [[{'text': 'Peter Blackburn', 'type': 'PER', 'start': 0, 'end': 15, 'score': 0.98},
      {'text': 'Brussels', 'type': 'LOC', 'start': 24, 'end': 32, 'score': 0.97}]]

Every head loads (the CRF and GlobalPointer too, which ``transformers.pipeline`` cannot), and
the entities are those of ``seqlab predict`` and ``seqlab serve`` on the same text: the same
word splitting, the same subwords, the same decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class Labeller:
    """A trained run (or its ONNX export, with ``backend="onnxruntime"``) ready to predict.

    Args:
        directory: the ``train.output_dir`` of ``seqlab train``, or an exported directory.
        backend: ``torch`` or ``onnxruntime``.
        batch_size: model inputs per forward pass.
        bf16: bfloat16 autocast (torch backend).
        threads: ONNX Runtime threads.
    """

    def __init__(self, directory: str | Path, *, backend: str = "torch", batch_size: int = 64,
                 bf16: bool = False, threads: int | None = None):
        from .assemble import load_run
        from .tasks import PredictOptions

        self.task, self.run = load_run(directory)
        self.predictor = self.task.predictor(self.run, PredictOptions(
            batch_size=batch_size, bf16=bf16, backend=backend, threads=threads))

    def predict(self, items: Sequence) -> list:
        """One result per item, in order.

        NER: an item is a text (split into words as ``seqlab predict`` splits it) or a list of
        words (joined by spaces; character offsets refer to that joined text); the result is
        its entities, each ``{"text", "type", "start", "end", "score"}`` with half-open
        character offsets, nested ones included where the run predicts them. QA: an item is
        ``(question, context)``; the result ``{"question", "answer", "start", "end",
        "score"}``.
        """
        if isinstance(items, (str, tuple)):
            raise TypeError("predict takes a list of items (texts, word lists or (question, "
                            "context) pairs); wrap a single one in a list")
        results = self.predictor.predict(list(items))
        return [r["entities"] if "entities" in r else r for r in results]


def load(directory: str | Path, **options) -> Labeller:
    """A trained run loaded for prediction (:class:`Labeller`; ``options`` are its
    arguments)."""
    return Labeller(directory, **options)
