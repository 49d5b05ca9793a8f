"""A float32 inference forward for BERT token classifiers on the CPU.

Prediction on the CPU is bound by the encoder's linear layers (about 85% of the forward). This
forward computes what ``BertForTokenClassification`` computes, from the same weights, with
three differences in how:

- the query, key and value projections are one matrix product;
- the linear layers run through oneDNN with weights packed once per call of
  :func:`seqlab.tasks.ner.predict_words` (about 20% more float32 GFLOP/s than the default
  matrix product on x86), the GELU fused into the first feed-forward product; where oneDNN is
  missing or disagrees with ``F.linear`` on a probe, plain ``F.linear`` is used;
- the last layer's output projection and feed-forward run only at the positions asked for
  (first subwords), since no other position's output is read.

Attention is ``F.scaled_dot_product_attention`` without a mask: the callers batch features of
equal length, so there is no padding. Results equal the Hugging Face forward to float32
rounding (``tests/test_models.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_ONEDNN: bool | None = None


def onednn_linear_available() -> bool:
    """Whether oneDNN's packed linear is present and agrees with ``F.linear`` on a probe."""
    global _ONEDNN
    if _ONEDNN is None:
        _ONEDNN = False
        try:
            if torch.backends.mkldnn.is_available():
                g = torch.Generator().manual_seed(0)
                x, w, b = (torch.randn(3, 5, 24, generator=g), torch.randn(40, 24, generator=g),
                           torch.randn(40, generator=g))
                packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
                plain = torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
                gelu = torch.ops.mkldnn._linear_pointwise(x, packed, b, "gelu", [], "none")
                _ONEDNN = (torch.allclose(plain, F.linear(x, w, b), rtol=1e-5, atol=1e-4)
                           and torch.allclose(gelu, F.gelu(F.linear(x, w, b)), rtol=1e-5, atol=1e-4))
        except (AttributeError, RuntimeError, NotImplementedError):
            _ONEDNN = False
    return _ONEDNN


class _Linear:
    """``F.linear`` with the weight packed for oneDNN when ``packed``; ``gelu`` fuses GELU."""

    def __init__(self, weights: list[Tensor], biases: list[Tensor], packed: bool, gelu: bool = False):
        w = torch.cat(weights).detach().contiguous() if len(weights) > 1 else weights[0].detach()
        self.bias = torch.cat(biases).detach() if len(biases) > 1 else biases[0].detach()
        self.gelu, self.packed = gelu, packed
        self.weight = torch.ops.mkldnn._reorder_linear_weight(w, None) if packed else w

    def __call__(self, x: Tensor) -> Tensor:
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(
                x, self.weight, self.bias, "gelu" if self.gelu else "none", [],
                "none" if self.gelu else "")
        y = F.linear(x, self.weight, self.bias)
        return F.gelu(y) if self.gelu else y


def _supported(model) -> bool:
    cfg = getattr(model, "config", None)
    if type(model).__name__ != "BertForTokenClassification" or cfg is None:
        return False
    if getattr(cfg, "hidden_act", None) != "gelu" or getattr(cfg, "is_decoder", False):
        return False
    if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
        return False
    p = next(model.parameters())
    return p.device.type == "cpu" and p.dtype == torch.float32


class FastTokenClassifier:
    """The inference forward described in this module, or ``None`` from :meth:`build` for a
    model it does not cover (another architecture or activation, a GPU, a dtype other than
    float32); callers then use the model's own forward.

    Example:
        >>> fast = FastTokenClassifier.build(model)            # doctest: +SKIP
        >>> logits = fast(input_ids, keep=input_ids != pad)    # (kept positions, labels)
    """

    def __init__(self, model, packed: bool):
        bert, cfg = model.bert, model.config
        self.heads = cfg.num_attention_heads
        self.eps = cfg.layer_norm_eps
        self.packed = packed
        emb = bert.embeddings
        self.word = emb.word_embeddings.weight.detach()
        self.position = emb.position_embeddings.weight.detach()
        self.token_type = emb.token_type_embeddings.weight[0].detach()
        self.emb_norm = (emb.LayerNorm.weight.detach(), emb.LayerNorm.bias.detach())
        self.layers = []
        for layer in bert.encoder.layer:
            att = layer.attention
            self.layers.append((
                _Linear([att.self.query.weight, att.self.key.weight, att.self.value.weight],
                        [att.self.query.bias, att.self.key.bias, att.self.value.bias], packed),
                _Linear([att.output.dense.weight], [att.output.dense.bias], packed),
                (att.output.LayerNorm.weight.detach(), att.output.LayerNorm.bias.detach()),
                _Linear([layer.intermediate.dense.weight], [layer.intermediate.dense.bias],
                        packed, gelu=True),
                _Linear([layer.output.dense.weight], [layer.output.dense.bias], packed),
                (layer.output.LayerNorm.weight.detach(), layer.output.LayerNorm.bias.detach()),
            ))
        self.classifier = (model.classifier.weight.detach(), model.classifier.bias.detach())

    @classmethod
    def build(cls, model, *, onednn: bool | None = None) -> FastTokenClassifier | None:
        """``onednn=None`` uses oneDNN where :func:`onednn_linear_available` says it works."""
        if not _supported(model):
            return None
        return cls(model, onednn_linear_available() if onednn is None else onednn)

    def _norm(self, x: Tensor, wb: tuple[Tensor, Tensor]) -> Tensor:
        return F.layer_norm(x, (x.shape[-1],), wb[0], wb[1], self.eps)

    @torch.inference_mode()
    def __call__(self, input_ids: Tensor, keep: Tensor | None = None) -> Tensor:
        """Logits ``(B, L, labels)`` for ``input_ids`` ``(B, L)`` (no padding: every position
        is attended to), or ``(n, labels)`` at the ``n`` positions where the boolean ``keep``
        ``(B, L)`` is true, in row-major order."""
        b, length = input_ids.shape
        if length > self.position.shape[0]:
            raise ValueError(f"input has {length} positions; the model has "
                             f"{self.position.shape[0]} position embeddings")
        h = self._norm(F.embedding(input_ids, self.word) + self.position[:length] + self.token_type,
                       self.emb_norm)
        hidden = h.shape[-1]
        head_dim = hidden // self.heads
        last = len(self.layers) - 1
        for i, (qkv, out, norm1, ffn_in, ffn_out, norm2) in enumerate(self.layers):
            q, k, v = qkv(h).view(b, length, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
            ctx = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, length, hidden)
            if i == last and keep is not None:
                ctx, h = ctx[keep], h[keep]
            h = self._norm(out(ctx) + h, norm1)
            h = self._norm(ffn_out(ffn_in(h)) + h, norm2)
        return F.linear(h, *self.classifier)
