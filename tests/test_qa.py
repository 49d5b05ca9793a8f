"""Span QA: reading, answer <-> token mapping over windows, post-processing, training both heads."""

from __future__ import annotations

import json
import random

import pytest
import torch

from seqlab.cli import main
from seqlab.config import config_from_dict
from seqlab.data.qa import QAExample, locate, read_squad, split_by_title
from seqlab.errors import DataError
from seqlab.tasks.qa import best_span, encode, tagging_scores

WORDS = ("the river flows north past old mills and quiet farms while the town council meets on "
         "tuesday to discuss bridges roads and schools").split()


def _long_example(rng: random.Random, n_words: int = 300) -> QAExample:
    words = [rng.choice(WORDS) for _ in range(n_words)]
    a = rng.randint(0, n_words - 4)
    words[a: a + 3] = ["zebra", "crossing", "lights"]
    context = " ".join(words)
    start = context.index("zebra crossing lights")
    return QAExample("q", "t", context, "which lights ?",
                     [{"text": "zebra crossing lights", "answer_start": start}],
                     references=["zebra crossing lights"])


def _cfg(max_length=64, stride=24):
    return config_from_dict({"task": "qa", "model": {"max_length": max_length},
                             "qa": {"doc_stride": stride}})


def test_answer_lands_in_the_right_windows(tiny_encoder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    rng = random.Random(0)
    for _ in range(20):
        ex = _long_example(rng)
        feats = encode(tok, [ex], _cfg(), with_labels=True)
        assert len(feats) > 3 and all(len(f["input_ids"]) <= 64 for f in feats)
        hits = 0
        for f in feats:
            s, e = f["start_positions"], f["end_positions"]
            ctx = [o for o in f["offsets"] if o is not None]
            inside = ctx[0][0] <= ex.answers[0]["answer_start"] and \
                ctx[-1][1] >= ex.answers[0]["answer_start"] + len("zebra crossing lights")
            if inside:
                hits += 1
                text = ex.context[f["offsets"][s][0]: f["offsets"][e][1]]
                assert text == "zebra crossing lights"
                assert f["labels"][s] == 1 and all(f["labels"][k] == 2 for k in range(s + 1, e + 1))
            else:
                assert (s, e) == (0, 0)  # CLS
                assert 1 not in f["labels"]
        assert hits >= 1


def test_post_processing_stays_inside_the_context():
    rng = random.Random(1)
    for _ in range(200):
        n = rng.randint(5, 40)
        offsets = [None] * n
        q = rng.randint(1, n - 2)
        for k in range(q, n - 1):
            offsets[k] = (k * 3, k * 3 + 2)
        s_sc = [rng.gauss(0, 3) for _ in range(n)]
        e_sc = [rng.gauss(0, 3) for _ in range(n)]
        s_sc[0] = e_sc[0] = 100.0  # CLS and question positions score high: must not be picked
        res = best_span(s_sc, e_sc, offsets, n_best=5, max_answer_length=4)
        assert res is not None
        _, s, e = res
        assert q * 3 <= s < e <= (n - 2) * 3 + 2
        assert (e - s + 1) // 3 <= 4


def test_tagging_scores_prefer_the_tagged_span():
    offsets = [None, (0, 1), (2, 3), (4, 5), (6, 7), None]
    lp = torch.full((6, 3), -5.0)
    lp[:, 0] = -0.01
    lp[2] = torch.tensor([-5.0, -0.01, -5.0])  # B at 2
    lp[3] = torch.tensor([-5.0, -5.0, -0.01])  # I at 3
    s, e = tagging_scores(lp, offsets)
    assert best_span(s, e, offsets, n_best=5, max_answer_length=5)[1:] == (2, 5)


def test_locate_and_relocate():
    assert locate("abc abc", "abc", 4) == 4
    assert locate("abc xx abc", "abc", 6) == 7  # nearest occurrence
    assert locate("abc", "zzz", 0) is None


def _squad(tmp_path, qas, context="Paris is the capital of France."):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"version": "1.1", "data": [{"title": "T", "paragraphs": [
        {"context": context, "qas": qas}]}]}))
    return p


def test_read_squad_relocates_and_reports(tmp_path):
    p = _squad(tmp_path, [
        {"id": "a", "question": "Capital?", "answers": [{"text": "Paris", "answer_start": 3}]},
        {"id": "b", "question": "Of?", "answers": [{"text": "Berlin", "answer_start": 0},
                                                   {"text": "France", "answer_start": 24}]},
        {"id": "c", "question": "Nothing?", "answers": [{"text": "Rome", "answer_start": 0}]},
    ])
    with pytest.warns(UserWarning, match="1 answers re-located.*2 answers not found.*1 questions skipped"):
        examples, report = read_squad(p)
    assert [e.id for e in examples] == ["a", "b"]
    assert examples[0].answers[0]["answer_start"] == 0
    assert examples[1].references == ["Berlin", "France"]
    assert report.skipped_questions == ["c"]


@pytest.mark.parametrize("qas, match", [
    ([{"id": "x1", "answers": []}], r"question x1 has no 'question'"),
    ([{"id": "x2", "question": "?"}], r"question x2 has no 'answers'"),
])
def test_read_squad_bad_input(tmp_path, qas, match):
    with pytest.raises(DataError, match=match):
        read_squad(_squad(tmp_path, qas))


def test_read_squad_malformed_json(tmp_path):
    p = tmp_path / "s.json"
    p.write_text('{"data": [\n{"title": }]}')
    with pytest.raises(DataError, match=r"s\.json:2: malformed JSON"):
        read_squad(p)


def test_empty_answers_in_v11_are_counted_and_skipped(tmp_path):
    p = _squad(tmp_path, [{"id": "e1", "question": "?", "answers": []},
                          {"id": "ok", "question": "?", "answers": [{"text": "Paris", "answer_start": 0}]}])
    with pytest.warns(UserWarning, match="first skipped: e1"):
        examples, _ = read_squad(p)
    assert [e.id for e in examples] == ["ok"]


def test_real_files(data_dir):
    examples, report = read_squad(data_dir / "cmrc2018" / "cmrc2018_dev.json", warn=False)
    assert report.questions == 3219
    assert report.relocated + report.dropped_answers == 200  # the 200 wrong offsets of SOURCES.md
    squad, report = read_squad(data_dir / "squad_v1.1" / "dev-v1.1.json.zip", warn=False)
    assert len(squad) == 10570 and report.relocated == 0
    train, held = split_by_title(squad)
    assert not {e.title for e in train} & {e.title for e in held}
    assert len({e.title for e in held}) == 10


@pytest.mark.parametrize("head", ["pointer", "tagging"])
def test_training_each_head_through_the_cli(tmp_path, tiny_encoder, head):
    rng = random.Random(2)
    paras = []
    for i in range(12):
        ex = _long_example(rng, n_words=40)
        paras.append({"context": ex.context, "qas": [{"id": f"q{i}", "question": ex.question,
                                                      "answers": ex.answers}]})
    data = tmp_path / "qa.json"
    data.write_text(json.dumps({"data": [{"title": "T", "paragraphs": paras}]}))
    cfg = tmp_path / "qa.yaml"
    cfg.write_text(f"task: qa\ndata: {{train_file: {data}, dev_file: {data}}}\n"
                   f"model: {{encoder: {tiny_encoder}, max_length: 48}}\n"
                   f"qa: {{head: {head}, doc_stride: 16}}\nloss: {{name: focal, gamma: 1.0}}\n"
                   f"train: {{epochs: 8, batch_size: 4, learning_rate: 3.0e-3, warmup_ratio: 0, "
                   f"log_every: 5, output_dir: {tmp_path / 'out'}}}\n")
    assert main(["train", str(cfg), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["loss_history"][-1] < metrics["loss_history"][0]
    assert (tmp_path / "out" / "predictions_dev.json").is_file()
    assert main(["evaluate", str(tmp_path / "out"), "--file", str(data), "--no-progress"]) == 0
    ctx = tmp_path / "ctx.txt"
    ctx.write_text(paras[0]["context"])
    out = tmp_path / "answer.json"
    assert main(["predict", str(tmp_path / "out"), "--question", "which lights ?",
                 "--context-file", str(ctx), "--output", str(out)]) == 0
    ans = json.loads(out.read_text())
    assert ans["start"] is None or paras[0]["context"][ans["start"]: ans["end"]] == ans["answer"]
