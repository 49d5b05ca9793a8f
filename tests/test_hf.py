"""A real transformers.Trainer run with seqlab's losses, for token classification and for QA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import seqlab.hf
from seqlab.losses import build_loss


def _args(tmp_path, **kw):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1,
                             logging_steps=1, learning_rate=1e-3, report_to="none",
                             save_strategy="no", use_cpu=True, seed=0, **kw)


def _no_dropout(model):
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name, options", [("focal", {"gamma": 2.0}), ("soft_truncation", {})])
def test_trainer_token_classification_logs_seqlab_loss(tiny_encoder, tmp_path, name, options):
    from datasets import Dataset
    from transformers import (AutoModelForTokenClassification, AutoTokenizer,
                              DataCollatorForTokenClassification, Trainer)

    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in (5, 9, 7, 12):
        ids = torch.randint(5, tok.vocab_size, (n,), generator=g).tolist()
        labels = torch.randint(0, 3, (n,), generator=g).tolist()
        labels[0] = labels[-1] = -100
        rows.append({"input_ids": ids, "attention_mask": [1] * n, "labels": labels})
    ds = Dataset.from_list(rows)
    model = _no_dropout(AutoModelForTokenClassification.from_pretrained(tiny_encoder, num_labels=3))
    collator = DataCollatorForTokenClassification(tok)
    batch = collator(rows)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        expected = build_loss(name, **options)(logits, batch["labels"]).item()
    trainer = Trainer(model=model, args=_args(tmp_path), train_dataset=ds, data_collator=collator,
                      compute_loss_func=seqlab.hf.loss_function(name, **options))
    trainer.train()
    logged = trainer.state.log_history[0]["loss"]
    assert logged == pytest.approx(expected, abs=2e-4)


@pytest.mark.slow
def test_trainer_question_answering_logs_seqlab_loss(tiny_encoder, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, Trainer

    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    g = torch.Generator().manual_seed(1)
    rows = []
    for n in (10, 14, 8, 16):
        ids = torch.randint(5, tok.vocab_size, (n,), generator=g).tolist()
        s = int(torch.randint(1, n - 2, (1,), generator=g))
        rows.append({"input_ids": ids, "attention_mask": [1] * n, "start_positions": s,
                     "end_positions": s + 1})
    ds = Dataset.from_list(rows)
    model = _no_dropout(AutoModelForQuestionAnswering.from_pretrained(tiny_encoder))
    collator = seqlab.hf.QACollator(tok)
    batch = collator(rows)
    assert batch["labels"].shape == (4, 2)
    loss_fn = build_loss("focal", gamma=2.0)
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        expected = ((loss_fn(out.start_logits, batch["labels"][:, 0]) +
                     loss_fn(out.end_logits, batch["labels"][:, 1])) / 2).item()
    trainer = Trainer(model=model, args=_args(tmp_path, label_names=["labels"]), train_dataset=ds,
                      data_collator=collator,
                      compute_loss_func=seqlab.hf.loss_function("focal", gamma=2.0))
    trainer.train()
    assert trainer.state.log_history[0]["loss"] == pytest.approx(expected, abs=2e-4)


def test_qa_loss_with_ce_equals_the_model_own_loss(tiny_encoder):
    from transformers import AutoModelForQuestionAnswering

    model = AutoModelForQuestionAnswering.from_pretrained(tiny_encoder).eval()
    ids = torch.randint(5, 50, (3, 12))
    starts, ends = torch.tensor([1, 4, 2]), torch.tensor([2, 6, 2])
    out = model(input_ids=ids, start_positions=starts, end_positions=ends)
    ours = seqlab.hf.loss_function("ce")(out, torch.stack([starts, ends], 1))
    torch.testing.assert_close(ours, out.loss)
    # with the Trainer's count of items (2 per question) the value is the same
    ours_n = seqlab.hf.loss_function("ce")(out, torch.stack([starts, ends], 1), num_items_in_batch=6)
    torch.testing.assert_close(ours_n, out.loss)


def test_entity_metrics_drops_ignored_positions():
    from transformers import EvalPrediction

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    refs = np.array([[-100, 1, 2, 0, 3, -100], [-100, 0, 3, 4, -100, -100]])
    logits = np.full((2, 6, 5), -5.0)
    pred_ids = np.array([[4, 1, 2, 0, 3, 4], [1, 0, 3, 0, 1, 1]])  # garbage on -100 positions
    for i in range(2):
        for j in range(6):
            logits[i, j, pred_ids[i, j]] = 5.0
    m = seqlab.hf.entity_metrics(labels)(EvalPrediction(predictions=logits, label_ids=refs))
    # gold: PER, LOC, LOC(2 words); pred: PER, LOC, LOC(1 word) -> 2 of 3 right
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1_PER"] == 1.0
