"""The float32 inference forward (seqlab.models.fast) against the Hugging Face forward."""

from __future__ import annotations

import pytest
import torch

from seqlab.models.fast import FastTokenClassifier, onednn_linear_available
from seqlab.tasks.ner import predict_words

BACKENDS = [False] + ([True] if onednn_linear_available() else [])


@pytest.fixture(scope="module")
def classifier(tiny_encoder):
    from seqlab.models import load_token_classifier, load_tokenizer

    torch.manual_seed(1)
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    model = load_token_classifier(str(tiny_encoder), labels).eval()
    with torch.no_grad():  # a trained-looking head: random, not near zero
        model.classifier.weight.normal_(0, 1.0)
    return model, load_tokenizer(str(tiny_encoder))


@pytest.mark.parametrize("onednn", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (5, 40)])
def test_fast_forward_equals_model_forward(classifier, onednn, shape):
    model, _ = classifier
    g = torch.Generator().manual_seed(shape[1])
    ids = torch.randint(5, model.config.vocab_size, shape, generator=g)
    fast = FastTokenClassifier.build(model, onednn=onednn)
    assert fast is not None and fast.packed == onednn
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    torch.testing.assert_close(fast(ids), ref, rtol=1e-5, atol=1e-5)
    keep = torch.rand(shape, generator=g) < 0.6
    keep[0, 0] = True
    torch.testing.assert_close(fast(ids, keep), ref[keep], rtol=1e-5, atol=1e-5)


def test_fast_forward_covers_only_what_it_computes_exactly(classifier, tiny_encoder):
    from transformers import AutoModelForTokenClassification, BertConfig

    model, _ = classifier
    try:
        assert FastTokenClassifier.build(model.to(torch.bfloat16)) is None
    finally:
        model.to(torch.float32)
    relu = AutoModelForTokenClassification.from_config(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=32, hidden_act="relu"))
    assert FastTokenClassifier.build(relu) is None
    assert FastTokenClassifier.build(torch.nn.Linear(3, 3)) is None


def test_fast_forward_rejects_inputs_longer_than_the_positions(classifier):
    model, _ = classifier
    fast = FastTokenClassifier.build(model)
    n = model.config.max_position_embeddings + 1
    with pytest.raises(ValueError, match="position embeddings"):
        fast(torch.full((1, n), 5))


def test_predict_words_fast_equals_model_forward(classifier):
    model, tok = classifier
    sents = [["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
             ["Peter", "Blackburn"], ["BRUSSELS", "1996-08-22"], ["EU", "call"]] * 3
    kw = dict(max_length=8, overlap=2, batch_size=2, progress=False)  # windows too
    fast = predict_words(model, tok, sents, **kw)
    plain = predict_words(model, tok, sents, fast=False, **kw)
    assert [[l for l, _ in s] for s in fast] == [[l for l, _ in s] for s in plain]
    assert [p for s in fast for _, p in s] == pytest.approx([p for s in plain for _, p in s], abs=1e-5)
    assert [len(s) for s in fast] == [len(s) for s in sents]
