"""What the NER heads that label words (softmax, CRF) share: a label on each word's first
subword, the per-word scores of a window, and decoding a whole sentence's scores to tags.

A word is represented by its first subword: its label is put there (the other subwords are
ignored), and its score vector is read there. A long sentence's windows are merged word by word
(each word from the window where it sits farthest from an edge) before decoding, so a chain
decoder (Viterbi) sees the whole sentence.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.alignment import IGNORE, merge_windows, pad_batch
from ..data.schemes import tags_to_spans
from . import Head, SentencePrediction


class TokenHead(Head):
    """Base of the heads whose output is a label per word (``target = "tags"``)."""

    target = "tags"

    def window_targets(self, feature: dict, gold: Sequence[int], n_words: int) -> dict:
        """The training labels of one window: the gold label id of each word on its first
        subword, :data:`IGNORE` elsewhere; with ``model.label_subwords: all`` a word's later
        subwords carry its label too, ``B-X`` as ``I-X`` (as ``transformers.pipeline`` reads
        subwords), the special tokens :data:`IGNORE`."""
        index = feature["word_index"]
        if self.cfg.model.label_subwords != "all":
            return {"labels": [gold[w] if w >= 0 else IGNORE for w in index]}
        inside = self._continuation()
        labels, word = [IGNORE] * len(index), None
        for k in range(1, len(index) - 1):  # the first and last positions are special tokens
            if index[k] >= 0:
                word = index[k]
                labels[k] = gold[word]
            elif word is not None:
                labels[k] = inside[gold[word]]
        return {"labels": labels}

    # the label of an unknown word's first subword in partial annotation: out of the loss (the
    # softmax head, the weak baseline); the CRF keeps it in its chain as a free tag
    unknown_label = IGNORE

    def mask_unknown(self, targets: dict, feature: dict, known: list[bool]) -> dict:
        labels, word = list(targets["labels"]), None
        for k, w in enumerate(feature["word_index"]):
            if w >= 0:
                word = w
                if not known[w]:
                    labels[k] = self.unknown_label
            elif word is not None and not known[word] and 0 < k < len(labels) - 1:
                labels[k] = IGNORE  # label_subwords: all: the word's later subwords too
        return {**targets, "labels": labels}

    def _continuation(self) -> list[int]:
        """Per label id, the id of the label a word's later subword takes (``B-X`` -> ``I-X``)."""
        from ..data.schemes import split_tag

        index = {l: i for i, l in enumerate(self.labels)}
        out = []
        for i, label in enumerate(self.labels):
            prefix, typ = split_tag(label)
            out.append(index.get(f"I-{typ}", i) if prefix == "B" else i)
        return out

    def collate(self, rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
        return pad_batch(rows, pad_id)

    # ------------------------------------------------------------------ prediction

    def start_prediction(self, windows: list[list[tuple[int, int]]]) -> dict:
        """A fresh state for :meth:`collect_batch`: per sentence and window, the words' scores."""
        return {"values": [[{} for _ in w] for w in windows], "outputs": None}

    def collect_batch(self, state: dict, outputs, chunk: list[tuple[int, int, dict]],
                      keep: torch.Tensor) -> None:
        """Keep the scores of the words of a batch of windows ``chunk`` ((sentence, window,
        feature) each; ``keep`` marks the first subwords)."""
        rows = iter(self.word_scores(outputs, keep))
        state["outputs"] = {k: outputs[k] for k in self.output_names[1:]}
        for si, wi, f in chunk:
            for w in f["word_index"]:
                if w >= 0:
                    state["values"][si][wi][w] = next(rows)

    def finish_prediction(self, state: dict, windows, lengths: list[int], *,
                          all_decodings: bool = False) -> dict[str, list[SentencePrediction]]:
        """Merge each sentence's windows, decode; per decoding (the configured one, then the
        others with ``all_decodings``), a prediction per sentence."""
        names = [self.decode] + ([d for d in self.decodes if d != self.decode]
                                 if all_decodings else [])
        full = [i for i, n in enumerate(lengths) if n]
        scores = [torch.stack(merge_windows(lengths[i], windows[i], state["values"][i]))
                  for i in full]
        decoded = self.decodings(scores, state["outputs"], names) if full else \
            {d: [] for d in names}
        out = {}
        for name, per_sentence in decoded.items():
            preds = [SentencePrediction([], [], []) for _ in lengths]
            for i, (ids, probs) in zip(full, per_sentence):
                tags = [self.labels[k] for k in ids]
                preds[i] = SentencePrediction(self.entities(tags, probs), tags, probs)
            out[name] = preds
        return out

    def word_scores(self, outputs, keep: torch.Tensor) -> torch.Tensor:
        """The score vectors ``(N, C)`` of the words of a batch (``keep``: first subwords, in
        row-major order), in float32 on the CPU."""
        return outputs["logits"][keep].float().cpu()

    def decodings(self, scores: list[torch.Tensor], outputs, names: list[str]
                  ) -> dict[str, list[tuple[list[int], list[float]]]]:
        """Decode sentences from their merged word scores ``(W, C)``: for each decoding in
        ``names`` (the configured one first), per sentence the label ids and the probability
        of each chosen label."""
        raise NotImplementedError

    def entities(self, tags: list[str], probs: list[float]) -> list[tuple[str, int, int, float]]:
        """``(type, start, end, score)`` of the entities a sentence's tags hold (read as
        conlleval does: an ``I-X`` after ``O`` opens one), scored by the mean probability of
        their words."""
        scheme = self.cfg.data.train_scheme
        return [(typ, s, e, sum(probs[s:e]) / (e - s)) for typ, s, e in tags_to_spans(tags, scheme)]


def pad_scores(scores: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sentences' score matrices ``(W_i, C)`` padded into ``(B, W, C)`` with a word mask."""
    width = max(s.shape[0] for s in scores)
    c = scores[0].shape[1]
    out = torch.zeros(len(scores), width, c)
    mask = torch.zeros(len(scores), width, dtype=torch.bool)
    for i, s in enumerate(scores):
        out[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = True
    return out, mask


def compact_words(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                       torch.Tensor]:
    """The labelled positions of each row moved to its front, in order: ``(scores (B, L, C),
    tags (B, L), mask (B, L))``. A stable sort on the ignore mask: no host read, no loop."""
    labelled = labels != IGNORE
    order = torch.sort((~labelled).to(torch.uint8), dim=1, stable=True).indices
    scores = logits.gather(1, order.unsqueeze(2).expand(-1, -1, logits.shape[2]))
    tags = labels.gather(1, order).masked_fill(~labelled.gather(1, order), 0)
    return scores, tags, labelled.gather(1, order)
