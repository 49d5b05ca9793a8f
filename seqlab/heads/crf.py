"""The CRF head: a linear-chain conditional random field over the words' emission scores
(Lafferty et al., 2001; flair's classic head), trained on its negative log-likelihood and decoded
with Viterbi.

Emissions are a linear layer over each word's first subword; a learnt transition score for each
pair of tags, and a start and an end score for each tag. The tag scheme's impossible transitions
(IOB2: no ``I-X`` after ``O`` or ``B-Y``, none first) are excluded in training and decoding: their
scores are fixed at a large negative number, so no probability goes to them. A training window
that begins or ends inside a sentence has no start or end scores (its first word may well be
``I-X``). The algorithms are :mod:`seqlab.heads._chain`, plain torch vectorised over the batch:
``pytorch-crf``, the usual library, has had no release since 2019 and has no constrained
transitions (``scripts/bench_heads.py --crf-only`` compares their speed).

The model returns the emissions as ``logits`` and the constrained ``transitions``,
``start_transitions`` and ``end_transitions`` beside them, so the loss, decoding and the ONNX
export need nothing but the model's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput

from . import register_head
from ._chain import UNKNOWN, allowed_transitions, constrained, crf_nll, marginals, viterbi
from ._encoder import EncoderWithHead, load_encoder_model
from .tokens import TokenHead, compact_words, pad_scores


@dataclass
class CrfOutput(ModelOutput):
    logits: torch.Tensor | None = None             # emissions (B, L, C)
    transitions: torch.Tensor | None = None        # (C, C), forbidden ones very negative
    start_transitions: torch.Tensor | None = None  # (C,)
    end_transitions: torch.Tensor | None = None    # (C,)


class CrfTagger(EncoderWithHead):
    """Encoder, dropout, a linear layer to tag emissions, and the chain's scores."""

    def __init__(self, config, encoder=None):
        super().__init__(config, encoder)
        n = config.num_labels
        self.classifier = nn.Linear(config.hidden_size, n)
        self.transitions = nn.Parameter(torch.zeros(n, n))
        self.start_transitions = nn.Parameter(torch.zeros(n))
        self.end_transitions = nn.Parameter(torch.zeros(n))
        self._allowed = None
        self.post_init()

    def allowed(self):
        """The scheme's allowed (start, transitions, end), from the config's labels."""
        if self._allowed is None:
            labels = [self.config.id2label[i] for i in range(self.config.num_labels)]
            self._allowed = allowed_transitions(labels, getattr(self.config, "seqlab_scheme", "iob2"))
        return self._allowed

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_) -> CrfOutput:
        emissions = self.classifier(self.hidden(input_ids, attention_mask, token_type_ids))
        trans, start, end = constrained(self.transitions, self.start_transitions,
                                        self.end_transitions, self.allowed())
        return CrfOutput(logits=emissions, transitions=trans, start_transitions=start,
                         end_transitions=end)


class CrfLoss(nn.Module):
    """The chain's negative log-likelihood of the gold tags, summed over windows and divided
    by the number of labelled words (or by ``num_items_in_batch``), so that its scale is that of
    a token loss and gradient accumulation stays exact."""

    def __init__(self, partial: bool = False):
        super().__init__()
        self.partial = partial  # labels may hold UNKNOWN words (partial annotation)

    def forward(self, outputs, labels: torch.Tensor, num_items_in_batch=None, *,
                at_start: torch.Tensor | None = None, at_end: torch.Tensor | None = None):
        scores, tags, mask = compact_words(outputs["logits"], labels)
        start, end = outputs["start_transitions"], outputs["end_transitions"]
        B, C = labels.shape[0], start.shape[0]
        if at_start is not None:  # a window inside a sentence has no start (or end) scores
            start = torch.where(at_start.bool().view(B, 1), start.expand(B, C), 0.0)
        if at_end is not None:
            end = torch.where(at_end.bool().view(B, 1), end.expand(B, C), 0.0)
        total = crf_nll(scores, tags, mask, outputs["transitions"], start, end,
                        partial=self.partial).sum()
        n = self.count_items(labels) if num_items_in_batch is None else num_items_in_batch
        if isinstance(n, torch.Tensor):
            return total / n.to(total.dtype).clamp_min(1.0)
        return total / n if n else total * 0.0

    @staticmethod
    def count_items(labels: torch.Tensor) -> torch.Tensor:
        return (labels != -100).sum()


@register_head("crf")
class CrfHead(TokenHead):
    """Linear-chain CRF over the words; its own likelihood is its loss (``loss.name: crf``)."""

    losses = ("crf",)
    default_loss = "crf"
    decodes = ("viterbi",)
    default_decode = "viterbi"
    output_names = ("logits", "transitions", "start_transitions", "end_transitions")

    def new_model(self):
        from ..models import quiet, resolve_encoder

        model = quiet(CrfTagger.on_encoder)(resolve_encoder(self.cfg.model.encoder),
                                            labels=self.labels, head=self.name, options={})
        model.config.seqlab_scheme = self.cfg.data.train_scheme
        return model

    @classmethod
    def load_model(cls, directory, meta):
        return load_encoder_model(CrfTagger, directory)

    unknown_label = UNKNOWN  # an unknown word stays in the chain, any tag free there

    @classmethod
    def make_loss(cls, name, options):
        return CrfLoss(partial=bool(options.get("partial", False)))  # seqlab.hf: partial=True

    def build_loss(self, options=None):
        self.loss_fn = CrfLoss(partial=self.partial)
        return self.loss_fn

    def window_targets(self, feature, gold, n_words):
        start, end = feature["window"]
        return {**super().window_targets(feature, gold, n_words),
                "at_start": int(start == 0), "at_end": int(end == n_words)}

    def collate(self, rows, pad_id):
        batch = super().collate([{k: v for k, v in r.items() if k not in ("at_start", "at_end")}
                                 for r in rows], pad_id)
        if "at_start" in rows[0]:
            batch["at_start"] = torch.tensor([r["at_start"] for r in rows])
            batch["at_end"] = torch.tensor([r["at_end"] for r in rows])
        return batch

    def loss(self, model, batch, num_items_in_batch=None):
        from . import model_inputs

        out = model(**model_inputs(batch))
        return self.loss_fn(out, batch["labels"], num_items_in_batch,
                            at_start=batch.get("at_start"), at_end=batch.get("at_end"))

    def count_items(self, batch):
        return self.loss_fn.count_items(batch["labels"])

    def decodings(self, scores, outputs, names):
        if not scores:
            return {"viterbi": []}
        chain = tuple(outputs[k].float().cpu() for k in ("transitions", "start_transitions",
                                                         "end_transitions"))
        padded, mask = pad_scores(scores)
        paths = viterbi(padded, mask, *chain)
        probs = marginals(padded, mask, *chain)
        out = []
        for i, s in enumerate(scores):
            tags = paths[i, : s.shape[0]]
            out.append((tags.tolist(), probs[i, : s.shape[0]].gather(1, tags.unsqueeze(1))
                        .squeeze(1).tolist()))
        return {"viterbi": out}

    @classmethod
    def accepts_outputs(cls, outputs) -> bool:
        return "transitions" in outputs and outputs["transitions"] is not None

    @classmethod
    def trainer_loss(cls, loss_fn, outputs, labels, num_items_in_batch=None):
        return loss_fn(outputs, labels.to(outputs["logits"].device), num_items_in_batch)
