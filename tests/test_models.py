"""Prediction by equal-length batches against the model's forward on one sentence at a time."""

from __future__ import annotations

import pytest
import torch

from seqlab.data.alignment import build_features, subwords_per_word
from seqlab.tasks.ner_inference import predict_words


@pytest.fixture(scope="module")
def classifier(tiny_encoder):
    from seqlab.models import load_token_classifier, load_tokenizer

    torch.manual_seed(1)
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    model = load_token_classifier(str(tiny_encoder), labels).eval()
    with torch.no_grad():  # a trained-looking head: random, not near zero
        model.classifier.weight.normal_(0, 1.0)
    return model, load_tokenizer(str(tiny_encoder))


def test_length_batches_equal_one_sentence_at_a_time(classifier):
    model, tok = classifier
    sents = [["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
             ["Peter", "Blackburn"], ["BRUSSELS", "1996-08-22"], ["EU", "call"]] * 3
    got = predict_words(model, tok, sents, max_length=64, overlap=2, batch_size=2, progress=False)
    assert [len(s) for s in got] == [len(s) for s in sents]
    for words, pred in zip(sents, got):
        (feat,) = build_features(subwords_per_word(tok, [words])[0], None, max_length=64, overlap=2,
                                 wrap=(tok.cls_token_id, tok.sep_token_id))
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([feat["input_ids"]])).logits[0]
        first = torch.tensor(feat["word_index"]) >= 0
        prob, label = logits[first].softmax(-1).max(-1)
        assert [l for l, _ in pred] == label.tolist()
        assert [p for _, p in pred] == pytest.approx(prob.tolist(), abs=1e-5)
