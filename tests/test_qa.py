"""Span QA: reading, answer <-> token mapping over windows, post-processing, training both heads."""

from __future__ import annotations

import json
import random

import pytest
import torch

from seqlab.cli import main
from seqlab.assemble import config_from_dict
from seqlab.data.qa import QAExample, locate, read_squad, split_by_title, trainable
from seqlab.errors import DataError, SeqlabError
from seqlab.errors import ConfigError
from seqlab.metrics import squad_em_f1
from seqlab.heads.pointer import best_span
from seqlab.heads.tagging import best_tagged_span, tagging_scores
from seqlab.tasks.qa import encode, truncate_questions

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


def _cfg(max_length=64, stride=24, max_query_length=16):
    return config_from_dict({"task": "qa", "model": {"max_length": max_length},
                             "qa": {"doc_stride": stride, "max_query_length": max_query_length}})


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
    with pytest.warns(UserWarning, match="1 answers re-located.*2 answers not found.*1 questions "
                      "with no answer found.*without a found answer: c"):
        examples, report = read_squad(p)
    # every question stays (scored against its references, as the official scripts count them)
    assert [e.id for e in examples] == ["a", "b", "c"]
    assert examples[2].answers == [] and examples[2].references == ["Rome"]
    assert [e.id for e in trainable(examples)] == ["a", "b"]
    assert examples[0].answers[0]["answer_start"] == 0
    assert examples[1].references == ["Berlin", "France"]
    assert report.skipped_questions == ["c"]


def test_only_the_first_process_warns_about_the_data(tmp_path, monkeypatch):
    import warnings

    p = _squad(tmp_path, [{"id": "c", "question": "?", "answers": [{"text": "Rome", "answer_start": 0}]}])
    monkeypatch.setenv("RANK", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would fail the test
        _, report = read_squad(p)
    assert report.skipped_questions == ["c"]  # the same reading, said by rank 0 only
    monkeypatch.setenv("RANK", "0")
    with pytest.warns(UserWarning, match="without a found answer: c"):
        read_squad(p)


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


def test_empty_answers_in_v11_are_counted_and_kept_for_scoring(tmp_path):
    p = _squad(tmp_path, [{"id": "e1", "question": "?", "answers": []},
                          {"id": "ok", "question": "?", "answers": [{"text": "Paris", "answer_start": 0}]}])
    with pytest.warns(UserWarning, match="without a found answer: e1"):
        examples, _ = read_squad(p)
    assert [e.id for e in examples] == ["e1", "ok"]
    assert [e.id for e in trainable(examples)] == ["ok"]


def test_squad_f1_follows_the_version_when_references_normalise_to_nothing():
    # v1.1's script: F1 0 (no token in common); v2.0's: 1 when both sides are empty
    assert squad_em_f1("", ["the"]) == (1.0, 0.0)
    assert squad_em_f1("", ["the"], version="2.0") == (1.0, 1.0)
    assert squad_em_f1("cat", [""], version="2.0") == (0.0, 0.0)
    with pytest.raises(ValueError, match="version"):
        squad_em_f1("a", ["a"], version="3")


def _brute_force(start, end, offsets, max_len):
    best = None
    for s in range(len(offsets)):
        for e in range(s, min(len(offsets), s + max_len)):
            if offsets[s] is None or offsets[e] is None:
                continue
            sc = start[s] + end[e]
            if best is None or sc > best[0]:
                best = (sc, offsets[s][0], offsets[e][1])
    return best


def test_tagged_span_search_is_exact():
    rng = random.Random(4)
    for n_ctx in (1, 3, 8, 30):  # contexts shorter and longer than n_best and max_answer_length
        for _ in range(200):
            q = rng.randint(0, 4)
            offsets = [None] * (1 + q) + [(2 * k, 2 * k + 1) for k in range(n_ctx)] + [None]
            lp = torch.randn(len(offsets), 3).log_softmax(-1)
            start, end = tagging_scores(lp, offsets)
            want = _brute_force(start, end, offsets, 5)
            got = best_tagged_span(start, end, offsets, max_answer_length=5)
            assert got[1:] == want[1:] and got[0] == pytest.approx(want[0])
    assert best_tagged_span([0.0, 1.0], [0.0, 1.0], [None, None], max_answer_length=3) is None


def test_questions_are_cut_to_max_query_length(tiny_encoder, capsys, monkeypatch):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    long_q = " ".join(["which river flows north past the mills"] * 40)
    out = truncate_questions(tok, [long_q, "which lights ?"], 10)
    assert len(tok(out[0], add_special_tokens=False)["input_ids"]) == 10
    assert long_q.startswith(out[0]) and out[1] == "which lights ?"
    assert "1 of 2 questions cut to qa.max_query_length=10" in capsys.readouterr().err
    ex = QAExample("q", "t", " ".join(WORDS * 3), long_q, [], references=["x"])
    monkeypatch.setenv("RANK", "1")  # the other processes of a launch cut alike and say nothing
    assert truncate_questions(tok, [long_q], 10) == out[:1]
    assert capsys.readouterr().err == ""
    feats = encode(tok, [ex], _cfg(max_length=48, stride=16, max_query_length=10), with_labels=False)
    assert all(len(f["input_ids"]) <= 48 for f in feats)
    # the question takes at most 10 of the 48 subwords, so each window holds 35 of context
    assert all(sum(o is None for o in f["offsets"]) <= 10 + 3 for f in feats)
    assert all(sum(o is not None for o in f["offsets"]) == 35 for f in feats[:-1])


def test_a_stride_with_no_room_is_refused():
    with pytest.raises(ConfigError, match=r"qa\.doc_stride: 128 leaves windows no room.*384 - "
                       r"qa\.max_query_length 300 - 3 special tokens = 81"):
        config_from_dict({"task": "qa", "model": {"max_length": 384},
                          "qa": {"doc_stride": 128, "max_query_length": 300}})


def test_real_files(data_dir):
    examples, report = read_squad(data_dir / "cmrc2018" / "cmrc2018_dev.json", warn=False)
    assert report.questions == 3219
    assert report.relocated + report.dropped_answers == 200  # the 200 wrong offsets of SOURCES.md
    squad, report = read_squad(data_dir / "squad_v1.1" / "dev-v1.1.json.zip", warn=False)
    assert len(squad) == 10570 and report.relocated == 0
    train, held = split_by_title(squad)
    assert not {e.title for e in train} & {e.title for e in held}
    assert len({e.title for e in held}) == 10


@pytest.mark.slow
@pytest.mark.parametrize("head", ["pointer", "tagging"])
def test_training_each_head_through_the_cli(tmp_path, tiny_encoder, head, monkeypatch):
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
                   f"model: {{encoder: {tiny_encoder}, max_length: 48, head: {head}}}\n"
                   f"qa: {{doc_stride: 16, max_query_length: 16}}\n"
                   f"loss: {{name: focal, gamma: 1.0}}\n"
                   f"train: {{epochs: 8, batch_size: 4, learning_rate: 3.0e-3, warmup_ratio: 0, "
                   f"log_every: 5, output_dir: {tmp_path / 'out'}}}\n")
    assert main(["train", str(cfg), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["loss_history"][-1] < metrics["loss_history"][0]
    # a line per question, from which the scores are recomputed
    lines = [json.loads(l) for l in (tmp_path / "out" / "predictions_dev.jsonl").read_text()
             .splitlines()]
    assert len(lines) == 12 and {"question", "context", "answers", "prediction"} <= set(lines[0])
    assert sum(l["f1"] for l in lines) / 12 == pytest.approx(metrics["dev"]["f1"])
    assert sum(l["exact_match"] for l in lines) / 12 == pytest.approx(metrics["dev"]["exact_match"])
    assert json.loads((tmp_path / "out" / "seqlab.json").read_text())["head"] == head
    monkeypatch.chdir(tmp_path)  # evaluate writes beside the user, never into the run
    assert main(["evaluate", str(tmp_path / "out"), "--file", str(data), "--no-progress"]) == 0
    assert (tmp_path / "predictions_out_qa.jsonl").read_text().count("\n") == 12
    ctx = tmp_path / "ctx.txt"
    ctx.write_text(paras[0]["context"])
    out = tmp_path / "answer.json"
    assert main(["predict", str(tmp_path / "out"), "--question", "which lights ?",
                 "--context-file", str(ctx), "--output", str(out)]) == 0
    ans = json.loads(out.read_text())
    assert ans["start"] is None or paras[0]["context"][ans["start"]: ans["end"]] == ans["answer"]
    # served: the same answer, and a QA request's own limits
    from starlette.testclient import TestClient

    from seqlab.serve import ServeOptions, create_app
    from seqlab.assemble import load_run
    from seqlab.tasks import PredictOptions

    task, run = load_run(tmp_path / "out")
    app = create_app(task.predictor(run, PredictOptions()), meta=run.meta, name="qa",
                     backend="torch", opts=ServeOptions())
    with TestClient(app) as client:
        served = client.post("/predict", json={"question": "which lights ?",
                                               "context": paras[0]["context"]})
        assert served.status_code == 200
        assert {k: served.json()[k] for k in ("answer", "start", "end")} == \
            {k: ans[k] for k in ("answer", "start", "end")}
        assert client.post("/predict", json={"texts": ["x"]}).status_code == 422
        assert client.post("/predict", json={"question": "q", "context": " "}).status_code == 422
        assert client.get("/health").json()["form"] == "question"
    # the report of a QA run
    assert main(["report", str(tmp_path / "out")]) == 0
    assert "Questions missed" in (tmp_path / "out" / "report_dev.html").read_text()


def test_the_old_qa_head_key_still_works_with_one_line(tmp_path, capsys):
    from seqlab.assemble import load_config

    cfg_path = tmp_path / "old.yaml"
    cfg_path.write_text("task: qa\nmodel: {max_length: 384}\nqa: {head: tagging}\n")
    cfg = load_config(cfg_path)
    assert cfg.model.head == "tagging" and cfg.to_dict()["qa"].get("head") is None
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["seqlab: qa.head is deprecated; read as model.head: tagging (write it so)"]
    cfg_path.write_text("task: qa\nmodel: {head: pointer, max_length: 384}\nqa: {head: tagging}\n")
    with pytest.raises(ConfigError, match="qa.head 'tagging' and model.head 'pointer' disagree"):
        load_config(cfg_path)


def test_empty_or_non_utf8_contexts_are_one_line(tmp_path, tiny_encoder, capsys):
    from seqlab.tasks import PredictOptions, Run
    from seqlab.tasks.qa import QATask

    run = Run(tmp_path, {"language": "en", "max_length": 48}, None)
    for content, match in ((b"  \n", "the context is empty"),
                           (b"caf\xe9", r"ctx.txt:1: not UTF-8 \(byte 0xe9 at byte offset 3\)")):
        ctx = tmp_path / "ctx.txt"
        ctx.write_bytes(content)
        opts = PredictOptions(extra={"question": "who?", "context_file": str(ctx)})
        with pytest.raises(SeqlabError, match=match):
            QATask.cli_predict(opts, run)


def test_evaluation_loads_only_the_split_it_scores(tmp_path, data_dir):
    import shutil

    from seqlab.data.qa import load_qa

    (tmp_path / "squad_v1.1").mkdir()
    shutil.copy(data_dir / "squad_v1.1" / "dev-v1.1.json.zip", tmp_path / "squad_v1.1")
    splits, language = load_qa("squad-v1.1", str(tmp_path), roles=("dev",))
    assert list(splits) == ["dev"] and len(splits["dev"]) == 10570 and language == "en"
    with pytest.raises(DataError, match="train-v1.1.json"):  # training does need the train file
        load_qa("squad-v1.1", str(tmp_path))
