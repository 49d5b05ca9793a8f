r"""The GlobalPointer span head (Su Jianlin, 2021): a score for every candidate span of every
entity type, so entities may nest or overlap.

For each type :math:`\alpha`, a start projection :math:`q_{i,\alpha}` and an end projection
:math:`k_{j,\alpha}` of the encoder's states, rotated by rotary position embeddings (RoPE) so that
their product depends on the positions through :math:`j - i` only:

.. math:: s_\alpha(i, j) = (R_i q_{i,\alpha})^\top (R_j k_{j,\alpha}) / \sqrt{d}
          = q_{i,\alpha}^\top R_{j-i}\, k_{j,\alpha} / \sqrt{d}

Efficient GlobalPointer (``model.efficient: true``; Su, 2022) shares one ``q``/``k`` pair between
the types and adds a per-type term that is linear in :math:`[q_i; k_i]` and in :math:`[q_j; k_j]`:
:math:`s_\alpha(i, j) = q_i^\top R_{j-i} k_j / \sqrt{d} + w_\alpha^\top [q_i; k_i] +
v_\alpha^\top [q_j; k_j]`, with far fewer parameters per type. It is not the default: on
CoNLL-2003 it scored 86.62 test F1 against the standard head's 87.70 (``make bench-heads``).

Spans are over words: a word's start is its first subword, its end its last subword, so a
span of words ``[s, e)`` is the score at (first subword of ``s``, last subword of ``e - 1``). The
model scores every pair of positions, ``(B, types, L, L)``; the candidates are the pairs of a
word start and a word end with ``s <= e - 1`` (the upper triangle) and, with
``model.max_span_words``, at most that many words. Memory grows with types x L^2 per window
(``scripts/bench_heads.py`` measures it). A span is predicted where its score is above 0 (the
threshold :func:`seqlab.losses.multilabel_ce` is built around); its reported score is the
score's logistic sigmoid.

Windows: a long sentence is cut into overlapping windows of words. A span is trained and scored
only in windows that hold all of its words, and decided by the one where it sits farthest from
an edge (as a word's label is); a span longer than a window's overlap that crosses a window
boundary lies in no window and cannot be predicted.

Nested predictions are kept where the training data nests (``eval.allow_nested: auto``, the
default; the run records the choice in ``seqlab.json``, so evaluation, prediction, serving and
the export follow the run); on flat data they are made flat: the highest-scoring spans that do
not overlap a higher-scoring one are kept. ``true`` and ``false`` force either.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput

from ..data.alignment import pad_batch
from ..errors import ConfigError
from . import Head, SentencePrediction, model_inputs, register_head
from ._encoder import EncoderWithHead, load_encoder_model

IGNORE = -100
UNKNOWN_SPAN = -2  # in collated labels: a candidate over an unknown word (partial annotation)


@dataclass
class GlobalPointerOptions:
    efficient: bool = False               # the shared span extractor with per-type terms
    head_size: int = 64                   # d: the size of q and k (even, for RoPE)
    max_span_words: int | None = None     # no candidate span longer than this many words

    def __post_init__(self):
        if self.head_size < 2 or self.head_size % 2:
            raise ConfigError(f"model.head_size: expected an even number >= 2, got {self.head_size}")
        if self.max_span_words is not None and self.max_span_words < 1:
            raise ConfigError(f"model.max_span_words: expected >= 1 or null, got "
                              f"{self.max_span_words}")


@dataclass
class SpanOutput(ModelOutput):
    logits: torch.Tensor | None = None    # (B, types, L, L): span scores, start by end position


def rope(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of ``x`` ``(B, L, ..., d)`` along its second axis: the pairs of
    features ``(2m, 2m+1)`` rotated by the angle ``position * 10000^(-2m/d)``."""
    d, length = x.shape[-1], x.shape[1]
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # angles: float32 at least
    inv = torch.pow(10000.0, -torch.arange(0, d, 2, device=x.device, dtype=dtype) / d)
    angle = torch.arange(length, device=x.device, dtype=dtype).unsqueeze(1) * inv
    shape = (1, length) + (1,) * (x.dim() - 3) + (d,)
    sin = angle.sin().repeat_interleave(2, dim=-1).view(shape).to(x.dtype)
    cos = angle.cos().repeat_interleave(2, dim=-1).view(shape).to(x.dtype)
    turned = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape)
    return x * cos + turned * sin


class GlobalPointer(EncoderWithHead):
    """Encoder and the span scorer; returns the scores of every position pair per type."""

    def __init__(self, config, encoder=None):
        super().__init__(config, encoder)
        opts = GlobalPointerOptions(**getattr(config, "seqlab_head_options", {}))
        self.types, self.size, self.efficient = config.num_labels, opts.head_size, opts.efficient
        hidden = config.hidden_size
        if self.efficient:
            self.qk = nn.Linear(hidden, 2 * self.size)
            self.type_terms = nn.Linear(2 * self.size, 2 * self.types)
        else:
            self.qk = nn.Linear(hidden, self.types * 2 * self.size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_) -> SpanOutput:
        h = self.hidden(input_ids, attention_mask, token_type_ids)
        B, L = h.shape[:2]
        x = self.qk(h)
        if self.efficient:
            q, k = rope(x[..., ::2]), rope(x[..., 1::2])                      # (B, L, d)
            shared = torch.einsum("bmd,bnd->bmn", q, k) / math.sqrt(self.size)
            terms = self.type_terms(x).transpose(1, 2) / 2                    # (B, 2T, L)
            logits = shared.unsqueeze(1) + terms[:, 0::2, :, None] + terms[:, 1::2, None, :]
        else:
            x = x.view(B, L, self.types, 2 * self.size)
            q, k = rope(x[..., : self.size]), rope(x[..., self.size:])         # (B, L, T, d)
            logits = torch.einsum("bmtd,bntd->btmn", q, k) / math.sqrt(self.size)
        return SpanOutput(logits=logits)


def word_bounds(feature: dict) -> tuple[list[int], list[int]]:
    """The positions of each word's first and last subword in a window's ``input_ids``."""
    first = [p for p, w in enumerate(feature["word_index"]) if w >= 0]
    last = [p - 1 for p in first[1:]] + ([len(feature["input_ids"]) - 2] if first else [])
    return first, last


@register_head("global_pointer")
class GlobalPointerHead(Head):
    """Span scores per type; multilabel categorical cross-entropy, or a loss's binary form."""

    target = "spans"
    binary_losses = True
    samples_negatives = True
    default_loss = "multilabel_ce"
    options = GlobalPointerOptions

    def new_model(self):
        from ..models import quiet, resolve_encoder

        return quiet(GlobalPointer.on_encoder)(resolve_encoder(self.cfg.model.encoder),
                                               labels=self.labels, head=self.name,
                                               options=asdict(self.opts))

    @classmethod
    def load_model(cls, directory, meta):
        return load_encoder_model(GlobalPointer, directory)

    @property
    def max_span(self) -> int | None:
        return self.opts.max_span_words

    # ------------------------------------------------------------------ training

    def window_targets(self, feature: dict, gold: list[tuple[int, int, int]], n_words: int) -> dict:
        """The window's word bounds and its gold spans ``[type, first word, last word]``
        (window-local, the last inclusive): those entirely inside the window."""
        ws, we = feature["window"]
        first, last = word_bounds(feature)
        spans = [[t, s - ws, e - 1 - ws] for t, s, e in gold if ws <= s and e <= we
                 and (self.max_span is None or e - s <= self.max_span)]
        return {"word_first": first, "word_last": last, "spans": spans}

    @property
    def keep_nested(self) -> bool:
        """Whether overlapping predicted spans are kept (``eval.allow_nested``)."""
        choice = str(self.cfg.eval.allow_nested).lower()
        return choice == "true" or (choice == "auto" and self.data_nested)

    def meta(self) -> dict:
        return {**super().meta(), "allow_nested": self.keep_nested}

    def mask_unknown(self, targets: dict, feature: dict, known: list[bool]) -> dict:
        """Partial annotation: a candidate span over an unknown word is no certain negative (its
        label is :data:`UNKNOWN_SPAN` in :meth:`collate`: out of the loss, or a candidate of
        negative sampling); gold spans stay positives."""
        ws, we = feature["window"]
        return {**targets, "unknown": [w - ws for w in range(ws, we) if not known[w]]}

    def candidates(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Word pairs ``(i, j)``, ``i <= j``, of the candidate spans among ``n`` words."""
        i, j = torch.triu_indices(n, n)
        if self.max_span is not None:
            keep = j - i < self.max_span
            i, j = i[keep], j[keep]
        return i, j

    def collate(self, rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
        """Input ids and the span labels ``(B, types, L, L)``: 1 at a gold span, 0 at another
        candidate, :data:`UNKNOWN_SPAN` at a candidate over an unknown word, :data:`IGNORE` at
        every pair that is no candidate (and ``words``, each window's count). A loss takes them
        through :meth:`training_labels` (or :func:`resolve_unknown`)."""
        batch = pad_batch([{"input_ids": r["input_ids"]} for r in rows], pad_id)
        B, L = batch["input_ids"].shape
        labels = torch.full((B, len(self.labels), L, L), IGNORE, dtype=torch.int8)
        for b, r in enumerate(rows):
            first, last = torch.tensor(r["word_first"]), torch.tensor(r["word_last"])
            i, j = self.candidates(len(first))
            labels[b, :, first[i], last[j]] = 0
            if r.get("unknown"):  # candidates that hold an unknown word: no certain negatives
                unk = torch.zeros(len(first) + 1, dtype=torch.long)
                unk[torch.tensor(r["unknown"]) + 1] = 1
                unk = unk.cumsum(0)
                hit = (unk[j + 1] - unk[i]) > 0
                labels[b, :, first[i[hit]], last[j[hit]]] = UNKNOWN_SPAN
            for t, s, e in r["spans"]:
                labels[b, t, first[s], last[e]] = 1
        batch["labels"] = labels
        batch["words"] = torch.tensor([len(r["word_first"]) for r in rows])
        return batch

    @property
    def negative_rate(self) -> float | None:
        """Negative spans trained on per word of a window (``loss.negatives``), None for all
        (every span known to be no entity; on partial data a span over an unknown word is
        none); unset, all on complete data and :data:`~seqlab.config.NEGATIVE_RATE` on partial
        data."""
        from ..config import NEGATIVE_RATE

        chosen = self.cfg.loss.negatives
        if chosen is None:
            chosen = NEGATIVE_RATE if self.cfg.data.annotation == "partial" else "all"
        return None if chosen == "all" else float(chosen)

    def training_labels(self, batch, logits=None, *, draw: bool = True) -> torch.Tensor:
        """The batch's span labels, with negative sampling applied when it is on."""
        rate = self.negative_rate
        if rate is None:
            return resolve_unknown(batch["labels"])
        weighted = self.cfg.loss.negative_sampling == "weighted"
        return sample_negatives(batch["labels"], batch["words"], rate,
                                scores=logits if (weighted and draw) else None,
                                temperature=self.cfg.loss.negative_temperature, draw=draw)

    def loss(self, model, batch, num_items_in_batch=None):
        logits = model(**model_inputs(batch)).logits
        labels = self.training_labels(batch, logits)
        return self.loss_fn(logits.flatten(-2), labels.flatten(-2), num_items_in_batch)

    def count_items(self, batch):
        # every draw keeps the same number of negatives per window: count one drawn without noise
        return self.loss_fn.count_items(self.training_labels(batch, draw=False).flatten(-2))

    @classmethod
    def accepts_outputs(cls, outputs) -> bool:
        logits = outputs.get("logits") if hasattr(outputs, "get") else None
        return logits is not None and logits.dim() == 4

    @classmethod
    def trainer_loss(cls, loss_fn, outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"]
        return loss_fn(logits.flatten(-2), labels.to(logits.device).flatten(-2), num_items_in_batch)

    # ------------------------------------------------------------------ prediction

    def start_prediction(self, windows) -> dict:
        return {"spans": [[[] for _ in w] for w in windows]}

    def collect_batch(self, state, outputs, chunk, keep) -> None:
        """The positive candidate spans of each window: ``(type, start, end, score)`` in the
        sentence's words (``end`` exclusive)."""
        logits = outputs["logits"]
        for row, (si, wi, f) in enumerate(chunk):
            first, last = word_bounds(f)
            if not first:
                continue
            ws = f["window"][0]
            i, j = self.candidates(len(first))
            fi, lj = torch.tensor(first)[i], torch.tensor(last)[j]
            scores = logits[row][:, fi, lj].float().cpu()                    # (types, candidates)
            t, c = torch.nonzero(scores > 0, as_tuple=True)
            state["spans"][si][wi] = [(int(a), ws + int(i[b]), ws + int(j[b]) + 1, float(scores[a, b]))
                                      for a, b in zip(t, c)]

    def finish_prediction(self, state, windows, lengths, *, all_decodings: bool = False
                          ) -> dict[str, list[SentencePrediction]]:
        preds = []
        for si, wins in enumerate(windows):
            kept = []
            for wi, spans in enumerate(state["spans"][si]):
                for t, s, e, score in spans:
                    if _most_centred(wins, s, e) == wi:
                        kept.append((self.labels[t], s, e, score))
            kept.sort(key=lambda x: (-x[3], x[1], x[2], x[0]))
            if not self.keep_nested:
                kept = flatten_spans(kept)
            kept.sort(key=lambda x: (x[1], x[2], x[0]))
            preds.append(SentencePrediction([(t, s, e, _sigmoid(score)) for t, s, e, score in kept]))
        return {"spans": preds}


def resolve_unknown(labels: torch.Tensor) -> torch.Tensor:
    """Collated span labels for a loss without negative sampling: a span over an unknown word
    (:data:`UNKNOWN_SPAN`) is out of it (:data:`IGNORE`)."""
    return labels.masked_fill(labels == UNKNOWN_SPAN, IGNORE)


def sample_negatives(labels: torch.Tensor, words: torch.Tensor, rate: float, *,
                     scores: torch.Tensor | None = None, temperature: float = 1.0,
                     draw: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Negative sampling (Li et al., 2021): of each window's candidate negatives (a candidate
    that is no gold span of any type; on partial data a span over an unknown word too: a random
    span is rarely an entity, and a sampled one rarely a missing one), ``floor(rate * words) +
    1`` are trained on as negatives, the others become :data:`IGNORE` for every type.

    The sample is uniform, or, given the span scores ``(B, types, L, L)``, weighted toward the
    hard negatives (the idea of Li et al., 2022): drawn without replacement with probability
    proportional to ``exp(max over types of the score / temperature)``, by the Gumbel top-k
    trick. One draw per call from torch's generator (the run's seeded state), on the labels'
    device, with no host synchronisation; ``draw=False`` keeps the first spans in order, the
    same count as any draw.
    """
    B, T, L, _ = labels.shape
    negative = ((labels == 0) | (labels == UNKNOWN_SPAN)).all(1).flatten(1)  # (B, L*L)
    if not draw:
        key = -torch.arange(L * L, device=labels.device, dtype=torch.float32).expand(B, -1)
    elif scores is None:
        key = torch.rand(negative.shape, device=labels.device, generator=generator)
    else:
        u = torch.rand(negative.shape, device=labels.device, generator=generator)
        gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
        key = scores.detach().float().amax(1).flatten(1) / temperature + gumbel
    key = key.masked_fill(~negative, float("-inf"))
    order = key.argsort(dim=1, descending=True)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(L * L, device=labels.device).expand(B, -1))
    keep = torch.floor(rate * words.to(labels.device).float()).long() + 1
    drop = negative & (rank >= keep.unsqueeze(1))
    return labels.masked_fill(labels == UNKNOWN_SPAN, 0).masked_fill(drop.view(B, 1, L, L), IGNORE)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0


def _most_centred(windows: list[tuple[int, int]], start: int, end: int) -> int:
    """The window holding words ``[start, end)`` where they sit farthest from an edge."""
    best, where = -1, -1
    for k, (ws, we) in enumerate(windows):
        if ws <= start and end <= we:
            centred = min(start - ws, we - end)
            if centred > best:
                best, where = centred, k
    return where


def flatten_spans(spans: list[tuple]) -> list[tuple]:
    """Spans ``(type, start, end, score, ...)`` in decreasing score, each kept unless it
    overlaps one kept before it."""
    taken: list[tuple[int, int]] = []
    out = []
    for span in spans:
        s, e = span[1], span[2]
        if all(e <= a or b <= s for a, b in taken):
            taken.append((s, e))
            out.append(span)
    return out
