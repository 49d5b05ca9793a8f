"""The softmax head: a linear layer over each word's first subword and a softmax over the tags
(transformers' ``AutoModelForTokenClassification``, so a trained run loads in
``transformers.pipeline("token-classification")``).

Decoding (``eval.decode``): ``argmax`` takes each word's most probable tag; ``viterbi`` takes
the most probable sequence of tags that the scheme allows (no ``I-X`` after ``O`` or ``B-Y``),
the sum of the words' log-probabilities, with the transitions the scheme forbids at ``-inf``
(constrained decoding, Lester et al., 2020), the default: on CoNLL-2003 it scored 86.81 test F1
against argmax's 85.90 from the same run (``make bench-heads``). Evaluation scores both and
writes the configured one.
"""

from __future__ import annotations

import torch

from . import register_head
from ._chain import allowed_transitions, viterbi
from .tokens import TokenHead, pad_scores


@register_head("softmax")
class SoftmaxHead(TokenHead):
    """Softmax over tags per word; every registered multiclass loss applies."""

    class_weights = True
    in_transformers = True
    subword_labels = True
    decodes = ("argmax", "viterbi")
    default_decode = "viterbi"  # +0.9 test F1 over argmax on CoNLL-2003 (docs/benchmarks.md)

    def new_model(self):
        from ..models import load_token_classifier

        return load_token_classifier(self.cfg.model.encoder, self.labels)

    @classmethod
    def load_model(cls, directory, meta):
        from ..models import load_token_classifier

        return load_token_classifier(str(directory))

    def decodings(self, scores, outputs, names):
        logp = [s.log_softmax(-1) for s in scores]
        out = {}
        for name in names:
            if name == "argmax":
                out[name] = [(lp.argmax(-1).tolist(), lp.max(-1).values.exp().tolist()) for lp in logp]
            else:
                out[name] = constrained_viterbi(logp, self.labels, self.cfg.data.train_scheme)
        return out

    @classmethod
    def accepts_outputs(cls, outputs) -> bool:
        logits = outputs.get("logits") if hasattr(outputs, "get") else None
        return logits is not None and logits.dim() == 3 and "transitions" not in outputs


def constrained_viterbi(logp: list[torch.Tensor], labels: list[str], scheme: str):
    """Per sentence, the best tag sequence the scheme allows under the words' log-probabilities
    ``(W, C)``, and each chosen tag's probability."""
    if not logp:
        return []
    start, trans, end = allowed_transitions(labels, scheme)
    ninf = float("-inf")
    zeros = torch.zeros(len(labels))
    padded, mask = pad_scores(logp)
    paths = viterbi(padded, mask, torch.zeros(len(labels), len(labels)).masked_fill(~trans, ninf),
                    zeros.masked_fill(~start, ninf), zeros.masked_fill(~end, ninf))
    out = []
    for i, lp in enumerate(logp):
        tags = paths[i, : lp.shape[0]]
        out.append((tags.tolist(), lp.gather(1, tags.unsqueeze(1)).squeeze(1).exp().tolist()))
    return out
