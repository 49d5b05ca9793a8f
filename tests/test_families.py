"""Every encoder family, end to end, on locally built stand-ins (tests/families.py): the subwords
seqlab trains on are the subwords of running text, labels sit on each word's first one, text
spelling a special token stays text, character spans equal the text, QA answers equal the
reference strings exactly, and a learnable set is learnt as well as with WordPiece."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from families import FAMILIES, synthetic_ner
from seqlab.data.alignment import (build_features, running_text, special_ids, split_words,
                                   subwords_per_word, wrap_ids)
from seqlab.models import load_tokenizer

SPECIAL_WORDS = ["[SEP]", "</s>", "<mask>", "[CLS]", "<s>", "[MASK]", "<pad>", "[PAD]"]
BYTE_LEVEL = ("roberta", "roberta-prefix", "modernbert")


def _sentences() -> list[list[str]]:
    sents = [w for w, _ in synthetic_ner(30, 9)]
    sents.append(["Angela", "Merkel", "typed", "[SEP]", "and", "</s>", "then", "<mask>", "."])
    sents.append(["A", "word", "with", "U.S.", "dots", ",", "ZERO\u200bWIDTH", "and", "[CLS]"])
    return sents


@pytest.fixture(scope="module")
def tokenizers(family_encoders):
    return {f: load_tokenizer(str(d)) for f, d in family_encoders.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_words_get_the_subwords_of_running_text(tokenizers, family):
    tok = tokenizers[family]
    special, unk = special_ids(tok), tok.unk_token_id
    for words in _sentences():
        per_word = subwords_per_word(tok, [words])[0]
        text, _ = running_text(words)
        whole = tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert [t for sub in per_word for t in sub] == [unk if t in special else t for t in whole]
        if family in BYTE_LEVEL:  # every word after the first keeps its word-start marker
            for sub in per_word[1:]:
                assert tok.convert_ids_to_tokens(sub[0]).startswith("Ġ"), words


def test_byte_level_bpe_alignment_does_not_depend_on_add_prefix_space(tokenizers):
    for words in _sentences():
        a = subwords_per_word(tokenizers["roberta"], [words])[0]
        b = subwords_per_word(tokenizers["roberta-prefix"], [words])[0]
        assert a[1:] == b[1:]  # only the first word differs: the start of the text


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_sit_on_each_words_first_subword(tokenizers, family):
    tok = tokenizers[family]
    for words in _sentences():
        per_word = subwords_per_word(tok, [words])[0]
        labels = list(range(len(words)))
        (feat,) = build_features(per_word, labels, max_length=512, overlap=8, wrap=wrap_ids(tok))
        labelled = [(k, l) for k, l in enumerate(feat["labels"]) if l != -100]
        assert [l for _, l in labelled] == labels
        for k, w in labelled:
            assert feat["input_ids"][k] == per_word[w][0]


@pytest.mark.parametrize("family", FAMILIES)
def test_text_spelling_a_special_token_is_a_word(tokenizers, family):
    tok = tokenizers[family]
    first, last = wrap_ids(tok)
    special = special_ids(tok)
    words = ["Peter", *SPECIAL_WORDS, "Paris"]
    per_word = subwords_per_word(tok, [words])[0]
    assert len(per_word) == len(words) and all(per_word)
    (feat,) = build_features(per_word, None, max_length=512, overlap=8, wrap=(first, last))
    ids = feat["input_ids"]
    assert ids[0] == first and ids[-1] == last
    assert not special & set(ids[1:-1]), tok.convert_ids_to_tokens(ids)


@pytest.mark.parametrize("family", FAMILIES)
def test_qa_gold_spans_map_back_to_the_reference_string_exactly(tokenizers, family):
    from seqlab.assemble import config_from_dict
    from seqlab.data.qa import QAExample
    from seqlab.tasks.qa import encode

    tok = tokenizers[family]
    cfg = config_from_dict({"task": "qa", "model": {"max_length": 64}, "qa": {"doc_stride": 16,
                                                                             "max_query_length": 16}})
    examples = []
    for k, (words, tags) in enumerate(synthetic_ner(20, 5)):
        context = "  ".join(words) if k % 3 == 0 else " ".join(words)  # double spaces too
        start = tags.index(next(t for t in tags if t.startswith("B-")))
        end = start + 1
        while end < len(tags) and tags[end].startswith("I-"):
            end += 1
        answer = " ".join(words[start:end]) if k % 3 else "  ".join(words[start:end])
        at = context.index(answer)
        examples.append(QAExample(f"q{k}", "t", context, "Who is it [SEP] </s>?",
                                  [{"text": answer, "answer_start": at}], references=[answer]))
    feats = encode(tok, examples, cfg, with_labels=True)
    found = set()
    for f in feats:
        for o in f["offsets"]:
            if o is not None:
                text = examples[f["example"]].context[o[0]:o[1]]
                assert text and text == text.strip(), (family, o, text)
        if f["start_positions"] > 0:
            ex = examples[f["example"]]
            s, e = f["offsets"][f["start_positions"]][0], f["offsets"][f["end_positions"]][1]
            assert ex.context[s:e] == ex.answers[0]["text"]
            found.add(ex.id)
    assert len(found) == len(examples)


def test_max_length_follows_the_encoders_real_limit(family_encoders):
    from transformers import AutoConfig

    from seqlab.errors import ConfigError
    from seqlab.models import position_limit

    limits = {f: position_limit(load_tokenizer(str(d)), AutoConfig.from_pretrained(d))
              for f, d in family_encoders.items()}
    # RoBERTa's 514 learnt positions hold 512 subwords; DeBERTa-v3's relative positions and an
    # unset model_max_length (the 1e30 sentinel) bound nothing
    assert limits["roberta"] == limits["xlm-roberta"] == limits["bert-cased"] == 512
    assert limits["deberta-v2"] is None
    with pytest.raises(ConfigError, match="takes at most 512"):
        load_tokenizer(str(family_encoders["roberta"]), max_length=600)
    load_tokenizer(str(family_encoders["deberta-v2"]), max_length=600)


# --------------------------------------------------------------------------- end to end


_RUNS: dict[str, Path] = {}


def _run(family: str, encoders: dict[str, Path], data: Path, root: Path) -> Path:
    """The family's run on the synthetic set, trained once per test process."""
    from seqlab.cli import main

    if family not in _RUNS:
        out = root / family
        from conftest import train_args

        assert main(train_args(encoders[family], out, "data.scheme=auto",
                               train=data / "train.jsonl", dev=data / "dev.jsonl",
                               test=data / "test.jsonl", model__max_length=48,
                               train__epochs=20, train__batch_size=8,
                               train__learning_rate=3e-3, train__seed=1,
                               train__log_every=10)) == 0
        _RUNS[family] = out
    return _RUNS[family]


def _test_f1(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["test"]["default"]["f1"]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_predicts_and_exports_end_to_end(family, family_encoders,
                                                              synthetic_ner, tmp_path_factory):
    import seqlab
    from seqlab.cli import main

    root = tmp_path_factory.getbasetemp() / "family-runs"
    root.mkdir(exist_ok=True)
    run = _run(family, family_encoders, synthetic_ner, root)
    # the same F1 within noise as the WordPiece control (cased, like the synthetic names)
    control = _test_f1(_run("bert-cased", family_encoders, synthetic_ner, root))
    assert control > 0.9 and _test_f1(run) >= control - 0.05, (family, _test_f1(run), control)

    texts = ["Peter Blackburn flew to Brussels on Monday.", "In  Lagos, Ngozi Okonkwo met "
             "officials of Deutsche Bank [SEP] </s>.", "Shares of Boeing rose in Tokyo trading."]
    labeller = seqlab.load(run)
    results = labeller.predict(texts)
    for text, ents in zip(texts, results):
        for e in ents:
            assert text[e["start"]:e["end"]] == e["text"] == e["text"].strip() != ""
    names = {e["text"] for r in results for e in r}
    assert {"Peter Blackburn", "Brussels", "Ngozi Okonkwo", "Tokyo"} <= names, (family, results)
    # word lists give the entities of the text they join into
    words = [split_words(t)[0] for t in texts]
    assert [[(e["type"], e["text"]) for e in r] for r in labeller.predict(words)] == \
        [[(e["type"], e["text"]) for e in r] for r in labeller.predict([" ".join(w) for w in words])]

    # `seqlab predict` equals the Python API, and ONNX Runtime equals torch
    work = tmp_path_factory.mktemp(f"predict-{family}")
    src = work / "in.txt"
    src.write_text("\n".join(texts) + "\n")
    outs = []
    for extra in ([], ["--backend", "onnxruntime"]):
        out = work / f"out{len(outs)}.jsonl"
        assert main(["predict", str(run), str(src), "--output", str(out), *extra]) == 0
        outs.append([json.loads(l)["entities"] for l in out.read_text().splitlines()])
    assert outs[0] == results
    assert [[(e["type"], e["start"], e["end"]) for e in r] for r in outs[1]] == \
        [[(e["type"], e["start"], e["end"]) for e in r] for r in results]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_the_trainer_plug_in_trains_every_family(family_encoders, family, tmp_path):
    from transformers import Trainer, TrainingArguments

    import seqlab.hf
    from seqlab.models import load_token_classifier

    labels = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    tok = load_tokenizer(str(family_encoders[family]))
    model = load_token_classifier(str(family_encoders[family]), labels)
    data = synthetic_ner(16, 4)
    rows = seqlab.hf.features(model, tok, [w for w, _ in data], [t for _, t in data])
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=2,
                             logging_steps=1, report_to="none", save_strategy="no", use_cpu=True,
                             remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=rows,
                      data_collator=seqlab.hf.DataCollator(model, tok),
                      compute_loss_func=seqlab.hf.loss_function("focal", gamma=2.0))
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(l > 0 for l in losses)


def _squad_file(path: Path, n: int, seed: int) -> Path:
    """SQuAD-format questions over synthetic sentences: "Who ...?" with the person as the
    answer, some contexts with double spaces."""
    paragraphs = []
    for k, (words, tags) in enumerate(synthetic_ner(n, seed)):
        start = tags.index("B-PER") if "B-PER" in tags else None
        if start is None:
            continue
        sep = "  " if k % 4 == 0 else " "
        context = sep.join(words)
        answer = " ".join(words[start:start + 2])  # first and last name
        at = context.index(answer) if answer in context else None
        if at is None:
            continue
        paragraphs.append({"context": context, "qas": [{"id": f"q{seed}-{k}",
                                                        "question": "Who is named?",
                                                        "answers": [{"text": answer,
                                                                     "answer_start": at}]}]})
    path.write_text(json.dumps({"data": [{"title": f"t{seed}", "paragraphs": paragraphs}]}))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("family", ["deberta-v2", "modernbert"])
def test_qa_answers_equal_the_reference_strings_exactly(family, family_encoders, tmp_path):
    from seqlab.cli import main

    train = _squad_file(tmp_path / "train.json", 240, 11)
    dev = _squad_file(tmp_path / "dev.json", 60, 12)
    out = tmp_path / "qa"
    from conftest import train_args

    assert main(train_args(family_encoders[family], out, "qa.doc_stride=16",
                           "qa.max_query_length=8", config="squad-dev-split.yaml",
                           train=train, dev=dev, test=None, model__max_length=64,
                           train__epochs=10, train__batch_size=8, train__learning_rate=3e-3,
                           train__log_every=None)) == 0
    rows = [json.loads(l) for l in (out / "predictions_dev.jsonl").read_text().splitlines()]
    right = [r for r in rows if r["exact_match"] == 1.0]
    assert len(right) >= 0.5 * len(rows), (family, len(right), len(rows))
    for r in rows:
        pred = r["prediction"]
        assert pred == pred.strip() and r["context"][r["start"]:r["end"]] == pred
    for r in right:  # exactly the reference string, not only after SQuAD's normalisation
        assert r["prediction"] in r["answers"], r
