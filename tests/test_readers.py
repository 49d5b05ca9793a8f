"""Input readers as plug-ins, and `datasets` data as `data:`: a save_to_disk directory, Parquet,
Arrow and CSV files, a hub id (offline here: one line), ClassLabel or string tags, span columns
for nested data, SQuAD's column layout for QA, and the same one-line errors as CoNLL files."""

from __future__ import annotations

from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from seqlab.assemble import config_from_dict
from seqlab.errors import ConfigError, DataError  # noqa: E402
from seqlab.readers import READERS, reader_for  # noqa: E402
from seqlab.tasks.ner_corpus import load_corpus  # noqa: E402

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
ROWS = {"tokens": [["Peter", "Blackburn", "flew", "to", "Brussels"], ["Angela", "Merkel"],
                   ["Rain", "in", "Oslo"]],
        "ner_tags": [[1, 2, 0, 0, 3], [1, 2], [0, 0, 3]]}


def _dataset(rows=ROWS, tags=TAGS):
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=tags))})
    return datasets.Dataset.from_dict(rows, features=features)


def _cfg(**data):
    return config_from_dict({"data": data, "model": {"head": "softmax"}})


@pytest.fixture
def saved(tmp_path) -> Path:
    d = tmp_path / "saved"
    datasets.DatasetDict({"train": _dataset(), "validation": _dataset(),
                          "test": _dataset()}).save_to_disk(str(d))
    return d


def test_a_save_to_disk_directory_is_data(saved):
    corpus = load_corpus(_cfg(path=str(saved)))
    assert set(corpus.splits) == {"train", "dev", "test"}  # validation is dev
    first = corpus.splits["train"][0]
    assert first.tokens == ROWS["tokens"][0]
    assert first.tags == ["B-PER", "I-PER", "O", "O", "B-LOC"]  # ClassLabel ids -> names
    assert corpus.labels == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".arrow"])
def test_parquet_csv_and_arrow_files_are_data(tmp_path, suffix):
    ds = _dataset()
    path = tmp_path / f"train{suffix}"
    if suffix == ".parquet":
        ds.to_parquet(str(path))
    elif suffix == ".csv":  # CSV has no lists: the words and string tags as JSON lists
        import json

        names = ds.features["ner_tags"].feature.names
        path.write_text("tokens,ner_tags\n" + "".join(
            f'"{json.dumps(t).replace(chr(34), chr(34) * 2)}","'
            f'{json.dumps([names[i] for i in g]).replace(chr(34), chr(34) * 2)}"\n'
            for t, g in zip(ROWS["tokens"], ROWS["ner_tags"])))
    else:
        import pyarrow as pa

        table = ds.data.table
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
    assert reader_for(path).name == "datasets"
    corpus = load_corpus(_cfg(train_file=str(path), dev_file=str(path)))
    assert [s.tokens for s in corpus.splits["dev"]] == ROWS["tokens"]
    assert corpus.splits["train"][2].tags == ["O", "O", "B-LOC"]


def test_string_tags_and_other_column_names(tmp_path):
    ds = datasets.Dataset.from_dict({"words": ROWS["tokens"],
                                     "labels": [["B-PER", "I-PER", "O", "O", "B-LOC"],
                                                ["B-PER", "I-PER"], ["O", "O", "B-LOC"]]})
    ds.to_parquet(str(tmp_path / "t.parquet"))
    corpus = load_corpus(_cfg(train_file=str(tmp_path / "t.parquet"), tokens_column="words",
                              tags_column="labels"))
    assert corpus.splits["train"][1].tags == ["B-PER", "I-PER"]


def test_a_spans_column_carries_nested_entities(tmp_path):
    ds = datasets.Dataset.from_dict({
        "tokens": [["Bank", "of", "England", "staff"]],
        "entities": [[{"start": 0, "end": 3, "type": "ORG"}, {"start": 2, "end": 3, "type": "LOC"}]]})
    d = tmp_path / "nested"
    datasets.DatasetDict({"train": ds}).save_to_disk(str(d))
    cfg = config_from_dict({"data": {"path": str(d), "spans_column": "entities"},
                            "model": {"head": "global_pointer"}})
    corpus = load_corpus(cfg)
    assert sorted(corpus.splits["train"][0].spans) == [("LOC", 2, 3), ("ORG", 0, 3)]


def test_split_names_are_mapped_and_checked(saved):
    corpus = load_corpus(_cfg(path=str(saved), splits={"train": "train", "dev": "test"}))
    assert set(corpus.splits) == {"train", "dev"}
    with pytest.raises(DataError, match=r"no split 'dev' \(data.splits.dev\); it has train, "
                                        r"validation, test"):
        load_corpus(_cfg(path=str(saved), splits={"train": "train", "dev": "dev"}))
    with pytest.raises(ConfigError, match="unknown split 'eval'"):
        _cfg(path=str(saved), splits={"eval": "test"})


def test_bad_rows_are_one_line_naming_file_split_and_row(tmp_path):
    bad = datasets.Dataset.from_dict({"tokens": [["a", "b"], ["c"]], "ner_tags": [["O", "O"], ["X-PER"]]})
    bad.to_parquet(str(tmp_path / "bad.parquet"))
    with pytest.raises(DataError) as err:
        load_corpus(_cfg(train_file=str(tmp_path / "bad.parquet")))
    assert "bad.parquet [train] row 2" in str(err.value) and "X-PER" in str(err.value)
    short = datasets.Dataset.from_dict({"tokens": [["a", "b"]], "ner_tags": [["O"]]})
    short.to_parquet(str(tmp_path / "short.parquet"))
    with pytest.raises(DataError, match=r"row 1: 2 tokens but 1 tags"):
        load_corpus(_cfg(train_file=str(tmp_path / "short.parquet")))
    with pytest.raises(DataError, match=r"no column 'ner_tags'; its columns: tokens, labels"):
        datasets.Dataset.from_dict({"tokens": [["a"]], "labels": [["O"]]}).to_parquet(
            str(tmp_path / "cols.parquet"))
        load_corpus(_cfg(train_file=str(tmp_path / "cols.parquet")))


def test_a_hub_id_fails_in_one_line_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from seqlab.data import registry

    registry.hub_unreachable.cache_clear()
    with pytest.raises(DataError) as err:
        load_corpus(_cfg(path="eriktks/conll2003"))
    msg = str(err.value)
    assert "hub id" in msg and "HF_HUB_OFFLINE is set" in msg and "\n" not in msg


def test_the_cli_trains_from_a_datasets_directory_in_one_line_errors(saved, tmp_path, capsys):
    from seqlab.cli import main

    assert main(["train", "data.path=/no/such/dir", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "/no/such/dir" in err


def test_qa_from_squad_columns(tmp_path):
    from seqlab.data.qa import load_qa

    rows = {"id": ["a", "b"], "title": ["t", "t"], "context": ["Ngozi Okonkwo lives in Lagos.",
                                                                "It rains in Oslo."],
            "question": ["Who lives in Lagos?", "Where does it rain?"],
            "answers": [{"text": ["Ngozi Okonkwo"], "answer_start": [0]},
                        {"text": ["Oslo"], "answer_start": [12]}]}
    d = tmp_path / "qa"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "validation": datasets.Dataset.from_dict(rows)}).save_to_disk(str(d))
    cfg = config_from_dict({"task": "qa", "data": {"path": str(d)}, "model": {"max_length": 384}})
    splits, _ = load_qa(None, None, options=cfg.data)
    assert [ex.answers for ex in splits["dev"]] == [[{"text": "Ngozi Okonkwo", "answer_start": 0}],
                                                    [{"text": "Oslo", "answer_start": 12}]]


def test_a_reader_is_one_module_and_a_registration(tmp_path):
    from seqlab.data.conll import Sentence
    from seqlab.readers import Reader, register_reader

    @register_reader("slashes")
    class Slashes(Reader):  # "word/TAG word/TAG" a line
        suffixes = (".slash",)

        def read_ner(self, path, split):
            return [Sentence([w.rsplit("/", 1)[0] for w in line.split()],
                             [w.rsplit("/", 1)[1] for w in line.split()])
                    for line in Path(path).read_text().splitlines() if line.strip()]

    try:
        path = tmp_path / "train.slash"
        path.write_text("Peter/B-PER flew/O to/O Oslo/B-LOC\n")
        corpus = load_corpus(_cfg(train_file=str(path)))
        assert corpus.splits["train"][0].tags == ["B-PER", "O", "O", "B-LOC"]
        assert "slashes" in READERS.names()
        assert load_corpus(_cfg(train_file=str(path), format="slashes")).splits["train"]
    finally:
        READERS.unregister("slashes")
