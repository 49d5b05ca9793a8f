"""End to end through cli.main on a tiny model built in code, and every bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from seqlab.cli import main
from seqlab.data.alignment import split_words

from conftest import ner_train_args


def _train_args(fixtures: Path, encoder: Path, out: Path, *extra: str) -> list[str]:
    return ner_train_args(encoder, out, *extra)


@pytest.fixture(scope="module")
def trained(ner_run):
    return ner_run


def test_train_writes_everything_and_loss_goes_down(trained, fixtures):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "config.yaml",
                 "seqlab.json", "metrics.json", "metrics.jsonl", "predictions_dev.conll",
                 "predictions_test.conll"):
        assert (trained / name).is_file(), name
    assert not trained.with_name(trained.name + ".incomplete").exists()
    metrics = json.loads((trained / "metrics.json").read_text())
    history = metrics["loss_history"]
    assert history[-1] < 0.5 * history[0]
    for split in ("dev", "test"):
        assert metrics[split]["default"]["f1"] > 0.8  # 15 epochs learn the 16 fixture entities
        assert set(metrics[split]["strict"]["per_type"]) == {"LOC", "MISC", "ORG", "PER"}
    events = [json.loads(l)["event"] for l in (trained / "metrics.jsonl").read_text().splitlines()]
    assert events.count("eval") == 15 and "final" in events
    assert json.loads((trained / "seqlab.json").read_text())["scheme"] == "iob1"
    # predictions: token, gold and predicted in the file's own IOB1, the same in IOB2 (the
    # scored columns), the predicted label's probability; every word present
    rows = [l.split() for l in (trained / "predictions_test.conll").read_text().splitlines() if l]
    words = [l for l in (fixtures / "test.conll").read_text().splitlines()
             if l.strip() and not l.startswith("-DOCSTART-")]
    assert len(rows) == len(words) and all(len(r) == 6 for r in rows)
    assert rows[0][:2] == ["Peter", "I-PER"] and rows[0][3] == "B-PER"
    assert all(0 <= float(r[5]) <= 1 for r in rows)


def _columns(path: Path, *cols: int) -> list[list[list[str]]]:
    out, sent = [[] for _ in cols], [[] for _ in cols]
    for line in path.read_text().splitlines() + [""]:
        if line.strip():
            parts = line.split()
            for k, c in enumerate(cols):
                sent[k].append(parts[c])
        elif sent[0]:
            for k in range(len(cols)):
                out[k].append(sent[k])
            sent = [[] for _ in cols]
    return out


def test_every_reported_f1_is_seqeval_on_the_written_file(trained):
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    metrics = json.loads((trained / "metrics.json").read_text())
    for split in ("dev", "test"):
        path = trained / f"predictions_{split}.conll"
        gold, pred = _columns(path, 3, 4)           # the IOB2 columns
        assert f1_score(gold, pred) == metrics[split]["default"]["f1"]
        assert f1_score(gold, pred, mode="strict", scheme=IOB2) == metrics[split]["strict"]["f1"]
        gold1, pred1 = _columns(path, 1, 2)         # the file's own IOB1: conlleval's reading
        assert f1_score(gold1, pred1) == metrics[split]["default"]["f1"]


def test_saved_model_loads_in_transformers_pipeline(trained):
    """The pipeline labels each word by its first subword's argmax: the entities of seqlab's
    argmax decoding (the default decoding is Viterbi, which the pipeline does not do)."""
    from transformers import pipeline

    from seqlab.data.schemes import tags_to_spans
    from seqlab.models import load_token_classifier, load_tokenizer
    from seqlab.tasks.ner_inference import predict_words

    text = "Peter Blackburn said EU rejects German call"
    ner = pipeline("token-classification", model=str(trained), aggregation_strategy="first")
    got = [(e["entity_group"], e["start"], e["end"]) for e in ner(text)]
    words, offsets = split_words(text)
    model = load_token_classifier(str(trained))
    (pred,) = predict_words(model, load_tokenizer(str(trained)), [words], max_length=24, overlap=8)
    tags = [model.config.id2label[i] for i, _ in pred]
    ours = [(t, offsets[a][0], offsets[b - 1][1]) for t, a, b in tags_to_spans(tags)]
    assert ours and got == ours


def test_same_seed_same_scores(tmp_path, fixtures, tiny_encoder, trained):
    out = tmp_path / "again"
    assert main(_train_args(fixtures, tiny_encoder, out)) == 0
    a = json.loads((trained / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert a["loss_history"] == b["loss_history"]
    assert a["test"]["default"] == b["test"]["default"]


def test_evaluate_and_predict(trained, fixtures, tmp_path, capsys):
    out_file = tmp_path / "pred.conll"
    assert main(["evaluate", str(trained), "--file", str(fixtures / "test.conll"),
                 "--output", str(out_file), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "default mode" in printed and "strict mode" in printed and "overall" in printed
    assert out_file.is_file()
    text = tmp_path / "in.txt"
    text.write_text("Peter Blackburn visited Germany .\nEU rejects German call\n")
    jsonl = tmp_path / "out.jsonl"
    assert main(["predict", str(trained), str(text), "--output", str(jsonl)]) == 0
    lines = [json.loads(l) for l in jsonl.read_text().splitlines()]
    assert [l["text"] for l in lines] == text.read_text().splitlines()
    for line in lines:
        for ent in line["entities"]:
            assert line["text"][ent["start"]: ent["end"]] == ent["text"]
            assert set(ent) == {"text", "type", "start", "end", "score"}


def test_predict_bf16_matches_fp32_output_format(trained, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("Peter Blackburn visited Germany .\nEU rejects German call\n")
    outs = []
    for extra in ([], ["--bf16"]):
        jsonl = tmp_path / f"out{len(extra)}.jsonl"
        assert main(["predict", str(trained), str(text), "--output", str(jsonl), *extra]) == 0
        outs.append([json.loads(l) for l in jsonl.read_text().splitlines()])
    assert [l["text"] for l in outs[1]] == [l["text"] for l in outs[0]]
    for fp32, bf16 in zip(*outs):
        for ent in bf16["entities"]:
            assert bf16["text"][ent["start"]: ent["end"]] == ent["text"]
        same = {(e["type"], e["start"]): e["score"] for e in fp32["entities"]}
        for ent in bf16["entities"]:  # where both find an entity, their scores agree
            if (ent["type"], ent["start"]) in same:
                assert ent["score"] == pytest.approx(same[(ent["type"], ent["start"])], abs=0.05)


def test_split_words_offsets():
    words, offsets = split_words("Dr. Smith's café, 北京 2024-01-02!")
    assert all("Dr. Smith's café, 北京 2024-01-02!"[s:e] == w for w, (s, e) in zip(words, offsets))
    assert "北" in words and "京" in words


@pytest.mark.parametrize("text, words", [
    # abbreviations, initials and ordinals keep their dot; a sentence's end does not
    ("7. Jim Moran ( U.S. ) 23.25", ["7.", "Jim", "Moran", "(", "U.S.", ")", "23.25"]),
    ("Acme Corp. met Mr. J. Smith in Calif. on Jan. 5.",
     ["Acme", "Corp.", "met", "Mr.", "J.", "Smith", "in", "Calif.", "on", "Jan.", "5", "."]),
    ("Peter Blackburn flew to Brussels.", ["Peter", "Blackburn", "flew", "to", "Brussels", "."]),
    # numbers with , . : / stay whole
    ("10,000 at 08:40 for 1/2 of .125 and 1996-08-22",
     ["10,000", "at", "08:40", "for", "1/2", "of", ".125", "and", "1996-08-22"]),
    # clitics as the Treebank splits them; hyphens and inner apostrophes keep a word whole
    ("John's car isn't O'Neill's AL-AIN", ["John", "'s", "car", "is", "n't", "O'Neill", "'s",
                                           "AL-AIN"]),
    ("Germany 's", ["Germany", "'s"]), ("cannot", ["cannot"]),
    # quotes and brackets apart
    ('"Quoted," (she said)', ['"', "Quoted", ",", '"', "(", "she", "said", ")"]),
    # web and e-mail addresses whole, their punctuation apart
    ("See https://example.com/a?b=1, or a.b@c.org!",
     ["See", "https://example.com/a?b=1", ",", "or", "a.b@c.org", "!"]),
    # emoji (with variation selectors and flags) are words; currencies keep their letters
    ("I ❤️ Paris 🇫🇷 for C$ 5", ["I", "❤️", "Paris", "🇫🇷", "for", "C$", "5"]),
    ("北京 is big", ["北", "京", "is", "big"]),
])
def test_predict_splits_awkward_text_as_conll_does(text, words):
    got, offsets = split_words(text)
    assert got == words
    assert [text[a:b] for a, b in offsets] == got


def test_conll_test_sentences_come_back_as_their_words(data_dir):
    from seqlab.data.conll import read_conll

    sents = read_conll(data_dir / "conll2003" / "eng.testb")
    same = sum(split_words(" ".join(s.tokens))[0] == s.tokens for s in sents)
    assert same / len(sents) >= 0.995, f"{same} of {len(sents)}"


def test_predict_gives_evaluates_entities_on_the_same_words(trained, fixtures, tmp_path, capsys):
    """CoNLL sentences joined by spaces: predict's entities are evaluate's."""
    from seqlab.data.conll import read_conll
    from seqlab.data.schemes import tags_to_spans

    sents = read_conll(fixtures / "test.conll")
    src = tmp_path / "joined.txt"
    src.write_text("\n".join(" ".join(s.tokens) for s in sents) + "\n")
    out = tmp_path / "pred.jsonl"
    assert main(["predict", str(trained), str(src), "--output", str(out)]) == 0
    evaluated = tmp_path / "eval.conll"
    assert main(["evaluate", str(trained), "--file", str(fixtures / "test.conll"), "--output",
                 str(evaluated), "--no-progress"]) == 0
    capsys.readouterr()
    tags = _columns(evaluated, 4)[0]  # the predicted tags in the model's IOB2
    for sent, line, pred in zip(sents, out.read_text().splitlines(), tags):
        got = [(e["type"], e["text"]) for e in json.loads(line)["entities"]]
        want = [(t, " ".join(sent.tokens[a:b])) for t, a, b in tags_to_spans(pred)]
        assert got == want


def test_predict_of_nothing_is_nothing(trained, tmp_path, monkeypatch, capsys):
    import io

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["predict", str(trained), str(empty)]) == 0
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert main(["predict", str(trained)]) == 0
    assert capsys.readouterr().out == ""


def test_predict_output_has_no_raw_unicode_line_breaks(trained, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Peter\u2028Blackburn in\u2029Bonn\u0085now\nEU\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(trained), str(src), "--output", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert len(text.splitlines()) == 2  # str.splitlines would split on any of the three
    assert "\\u2028" in text and json.loads(text.splitlines()[0])["text"].startswith("Peter\u2028")


def test_bad_input_is_reported_before_the_model_loads(trained, tmp_path, monkeypatch, capsys):
    import seqlab.export

    def loaded(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(seqlab.export, "prediction_model", loaded)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n" * 3000 + b"caf\xe9\n")  # past the first block of a reader
    err = _run_bad(["predict", str(trained), str(bad)], capsys)
    assert "bad.txt:3001: not UTF-8 (byte 0xe9 at byte offset 15003)" in err


# --------------------------------------------------------------------------- bad input


def _run_bad(args, capsys):
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    return err


def test_bad_conll_line(tmp_path, fixtures, tiny_encoder, capsys):
    bad = tmp_path / "bad.conll"
    bad.write_text("EU NNP B-NP I-ORG\nrejects\n")
    out = tmp_path / "out"
    args = _train_args(fixtures, tiny_encoder, out)
    args[3] = f"data.train_file={bad}"
    err = _run_bad(args, capsys)
    assert "bad.conll:2: expected at least 2 columns" in err
    assert not out.exists() and not out.with_name("out.incomplete").exists()


@pytest.mark.parametrize("content, match", [
    ("EU NNP B-NP B_ORG\n", "bad.conll:1: tag 'B_ORG' fits no scheme"),
    ("", "bad.conll: no sentences found"),
])
def test_bad_train_files(tmp_path, fixtures, tiny_encoder, capsys, content, match):
    bad = tmp_path / "bad.conll"
    bad.write_text(content)
    args = _train_args(fixtures, tiny_encoder, tmp_path / "out")
    args[3] = f"data.train_file={bad}"
    assert match in _run_bad(args, capsys)


def test_not_utf8(tmp_path, fixtures, tiny_encoder, capsys):
    bad = tmp_path / "bad.conll"
    bad.write_bytes("K\xf6ln NNP B-NP I-LOC\n".encode("latin-1"))
    args = _train_args(fixtures, tiny_encoder, tmp_path / "out")
    args[3] = f"data.train_file={bad}"
    assert "bad.conll:1: not UTF-8" in _run_bad(args, capsys)


def test_dev_tag_absent_from_training(tmp_path, fixtures, tiny_encoder, capsys):
    dev = tmp_path / "dev.conll"
    dev.write_text("Bonn NNP B-NP I-LOC\nis VBZ O O\nfun NN O I-EVENT\n")
    args = _train_args(fixtures, tiny_encoder, tmp_path / "out")
    args[4] = f"data.dev_file={dev}"
    err = _run_bad(args, capsys)
    assert f"{dev}:3: entity type EVENT of the dev split never occurs in the training data" in err


@pytest.mark.parametrize("override, match", [
    ("train.epoch=3", "unknown config key train.epoch"),
    ("train.batch_size=many", "train.batch_size: expected an integer, got 'many'"),
    ("loss.name=focall", "unknown loss 'focall'"),
])
def test_bad_overrides(tmp_path, fixtures, tiny_encoder, capsys, override, match):
    out = tmp_path / "out"
    assert match in _run_bad(_train_args(fixtures, tiny_encoder, out, override), capsys)
    assert not out.exists()


def test_missing_data_file(tmp_path, fixtures, tiny_encoder, capsys):
    args = _train_args(fixtures, tiny_encoder, tmp_path / "out")
    args[3] = f"data.train_file={tmp_path / 'nope.conll'}"
    assert "nope.conll: file not found" in _run_bad(args, capsys)


def test_missing_named_dataset(tmp_path, capsys, tiny_encoder):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{dataset: wnut17, data_dir: {tmp_path}}}\nmodel: {{encoder: {tiny_encoder}}}\n"
                   f"train: {{output_dir: {tmp_path / 'out'}}}\n")
    err = _run_bad(["train", str(cfg)], capsys)
    assert "dataset 'wnut17' not found: looked for" in err and "wnut17train.conll" in err
    # offline (the tests set HF_HUB_OFFLINE): the hub is not tried, so no minutes of retries
    assert "the hub copy 'leondz/wnut_17' was not tried: HF_HUB_OFFLINE is set" in err


def test_occupied_output_dir_is_left_alone(tmp_path, fixtures, tiny_encoder, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    err = _run_bad(_train_args(fixtures, tiny_encoder, out), capsys)
    assert "exists and is not empty" in err
    assert (out / "keep.txt").read_text() == "precious"


def test_unknown_encoder_directory(tmp_path, fixtures, capsys):
    args = _train_args(fixtures, tmp_path / "no" / "such" / "dir", tmp_path / "out")
    assert "no such directory" in _run_bad(args, capsys)


def test_evaluate_needs_a_model_dir(tmp_path, capsys):
    err = _run_bad(["evaluate", str(tmp_path), "--file", "x.conll"], capsys)
    assert "not a seqlab model directory" in err


def test_hub_id_offline_is_a_clear_error(tmp_path, fixtures, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = _train_args(fixtures, "bert-base-cased", tmp_path / "out")
    err = _run_bad(args, capsys)
    assert "cannot load tokenizer from 'bert-base-cased'" in err and "hub" in err


def test_bf16_accumulation_and_bioes(tmp_path, fixtures, tiny_encoder, trained):
    out = tmp_path / "bf16"
    args = _train_args(fixtures, tiny_encoder, out, "train.bf16=true",
                       "train.gradient_accumulation_steps=2", "data.train_scheme=bioes",
                       "train.epochs=4")
    assert main(args) == 0
    meta = json.loads((out / "seqlab.json").read_text())
    assert meta["train_scheme"] == "bioes" and "S-PER" in meta["labels"]
    metrics = json.loads((out / "metrics.json").read_text())
    # the same data without accumulation (15 epochs) took one step per micro-batch
    micro_batches = json.loads((trained / "metrics.json").read_text())["steps"] // 15
    assert metrics["steps"] == 4 * -(-micro_batches // 2)
    assert metrics["loss_history"][-1] < metrics["loss_history"][0]


# --------------------------------------------------------------------------- what a careful user hits


class _Stdin:
    """A stand-in for sys.stdin whose ``buffer`` yields the given byte lines lazily."""

    def __init__(self, lines: list[bytes], on_read=None):
        self.lines, self.on_read = lines, on_read

    @property
    def buffer(self):
        for k, line in enumerate(self.lines):
            if self.on_read:
                self.on_read(k)
            yield line


def test_predict_splits_files_and_stdin_on_newlines_only(trained, tmp_path, monkeypatch, capsys):
    text = "Peter\u2028Blackburn\nEU\x85rejects\x0cGerman\x1ccall\r\nin Bonn\n\nlast line"
    src = tmp_path / "odd.txt"
    src.write_bytes(text.encode("utf-8"))
    out = tmp_path / "file.jsonl"
    assert main(["predict", str(trained), str(src), "--output", str(out)]) == 0
    from_file = [json.loads(l)["text"] for l in out.read_text(encoding="utf-8").split("\n") if l]
    want = ["Peter\u2028Blackburn", "EU\x85rejects\x0cGerman\x1ccall", "in Bonn", "", "last line"]
    assert from_file == want
    monkeypatch.setattr("sys.stdin", _Stdin(text.encode("utf-8").splitlines(keepends=True)))
    capsys.readouterr()
    assert main(["predict", str(trained)]) == 0
    # json.dumps escapes U+2028 and U+0085, so stdout has one line per input line
    from_stdin = [json.loads(l)["text"] for l in capsys.readouterr().out.split("\n") if l]
    assert from_stdin == want


def test_predict_streams_in_blocks(trained, monkeypatch, capsys):
    import seqlab.tasks.ner_inference

    monkeypatch.setattr(seqlab.tasks.ner_inference, "PREDICT_BLOCK_LINES", 2)
    seen = []

    def on_read(k):  # when line 5 is read, the first two blocks are already out
        if k == 4:
            seen.append(capsys.readouterr().out.count("\n"))

    monkeypatch.setattr("sys.stdin", _Stdin([b"Peter visited Bonn\n"] * 7, on_read))
    assert main(["predict", str(trained)]) == 0
    assert seen == [4]
    assert capsys.readouterr().out.count("\n") == 3


def test_predict_non_utf8_names_line_and_byte(trained, tmp_path, monkeypatch, capsys):
    data = b"Peter\nEU rejects\nK\xf6ln is big\n"
    monkeypatch.setattr("sys.stdin", _Stdin(data.splitlines(keepends=True)))
    err = _run_bad(["predict", str(trained)], capsys)
    assert "<stdin>:3: not UTF-8 (byte 0xf6 at byte offset 18)" in err
    src = tmp_path / "latin.txt"
    src.write_bytes(data)
    err = _run_bad(["predict", str(trained), str(src), "--output", str(tmp_path / "o.jsonl")], capsys)
    assert f"{src}:3: not UTF-8 (byte 0xf6 at byte offset 18)" in err
    assert not (tmp_path / "o.jsonl").exists()  # nothing half-written under the asked name


def test_output_into_a_missing_directory_fails_before_work(trained, fixtures, tmp_path, capsys):
    missing = tmp_path / "no" / "pred.jsonl"
    err = _run_bad(["predict", str(trained), str(fixtures / "test.conll"), "--output", str(missing)],
                   capsys)
    assert "the directory" in err and "does not exist" in err
    err = _run_bad(["evaluate", str(trained), "--file", str(fixtures / "test.conll"),
                    "--output", str(missing)], capsys)
    assert "does not exist" in err
    afile = tmp_path / "afile"
    afile.write_text("x")
    err = _run_bad(["evaluate", str(trained), "--file", str(fixtures / "test.conll"),
                    "--output", str(afile / "p.conll")], capsys)
    assert "is a file, not a directory" in err


def test_evaluate_never_writes_into_the_run(trained, fixtures, tmp_path, monkeypatch, capsys):
    before = sorted(p.name for p in trained.iterdir())
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(trained), "--file", str(fixtures / "test.conll"),
                 "--no-progress"]) == 0
    assert sorted(p.name for p in trained.iterdir()) == before
    assert (tmp_path / f"predictions_{trained.name}_test.conll").is_file()


def test_evaluate_warns_about_a_gold_type_the_model_never_learnt(trained, tmp_path, capsys):
    gold = tmp_path / "gold.conll"
    gold.write_text("Bonn NNP B-NP I-LOC\nis VBZ O O\nfun NN O I-EVENT\n")
    assert main(["evaluate", str(trained), "--file", str(gold), "--no-progress",
                 "--output", str(tmp_path / "p.conll")]) == 0
    err = capsys.readouterr().err
    assert f"{gold}:3: gold entity type EVENT was never learnt by this model" in err
    assert "scored as missed" in err


def test_output_dir_under_a_regular_file(tmp_path, fixtures, tiny_encoder, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    err = _run_bad(_train_args(fixtures, tiny_encoder, afile / "run"), capsys)
    assert "is a file, not a directory" in err


def test_an_override_without_equals_says_what_overrides_are(tmp_path, fixtures, tiny_encoder, capsys):
    args = _train_args(fixtures, tiny_encoder, tmp_path / "out") + ["train.seed"]
    err = _run_bad(args, capsys)
    assert "'train.seed' is not an override: overrides are dotted.key=value" in err


@pytest.mark.slow
def test_no_progress_means_no_bars_and_no_length_warning(tmp_path, fixtures, tiny_encoder, capfd):
    long = tmp_path / "train.conll"
    long.write_text((fixtures / "train.conll").read_text() + "\n" +
                    "".join(f"word{k % 7} NN O O\n" for k in range(700)))
    args = _train_args(fixtures, tiny_encoder, tmp_path / "out", "train.epochs=1")
    args[3] = f"data.train_file={long}"
    assert main(args) == 0
    err = capfd.readouterr().err
    for noise in ("Loading weights", "tokenising", "Writing model", "Token indices sequence length",
                  "it/s]"):
        assert noise not in err, noise


@pytest.mark.parametrize("command", ["datasets", "heads"])
def test_every_command_takes_no_progress(command, capsys):
    assert main([command, "--no-progress"]) == 0
    assert capsys.readouterr().out.strip()


def test_a_closed_pipe_is_no_traceback():
    import subprocess
    import sys

    for reader in ("head -1", "true"):  # `true` reads nothing: every write meets a closed pipe
        cmd = f"{sys.executable} -m seqlab.cli datasets | {reader}"
        proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "SEQLAB_DATA": "/nonexistent"})
        assert proc.stdout.startswith("data directory") or reader == "true"
        assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_serve_help_names_every_option_and_its_default(capsys):
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--host", "--port", "--max-batch", "--max-body-bytes"):
        line = next(l for l in out.splitlines() if l.strip().startswith(option))
        assert len(line.split()) > 2 or "default" in out  # help text beside the option
    assert "(default: 127.0.0.1)" in out and "(default: 8000)" in out
    assert "(default: 1000000)" in out


@pytest.mark.slow
def test_predict_shows_progress_on_stderr_when_asked(ner_run, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("Peter Blackburn visited Germany .\n" * 5)
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(ner_run), str(src), "--output", str(out)]) == 0
    assert "predicting" not in capsys.readouterr().err  # stderr is no terminal here
    assert main(["predict", str(ner_run), str(src), "--output", str(out), "--progress"]) == 0
    assert "predicting" in capsys.readouterr().err and len(out.read_text().splitlines()) == 5
