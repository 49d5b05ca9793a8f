"""CoNLL reading, tag schemes, word/subword alignment and windows, named datasets."""

from __future__ import annotations

import random

import pytest
import torch

from seqlab.data.alignment import build_features, make_windows, merge_windows, subwords_per_word
from seqlab.data.conll import read_conll, read_jsonl
from seqlab.data.registry import available_datasets, load_named, resolve_scheme
from seqlab.data.schemes import convert, detect_scheme, spans_to_tags, tags_to_spans
from seqlab.errors import DataError
from seqlab.data.alignment import pad_batch
from seqlab.tasks.ner_inference import length_batches, predict_words

# --------------------------------------------------------------------------- schemes

TYPES = ["PER", "LOC", "ORG"]


def _random_spans(rng: random.Random, n: int):
    spans, i = [], 0
    while i < n:
        if rng.random() < 0.4:
            length = rng.randint(1, 3)
            end = min(n, i + length)
            spans.append((rng.choice(TYPES), i, end))
            i = end
        else:
            i += 1
    return spans


@pytest.mark.parametrize("scheme", ["iob1", "iob2", "bioes", "bmes"])
def test_spans_round_trip_through_every_scheme(scheme):
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(1, 15)
        spans = _random_spans(rng, n)
        tags = spans_to_tags(spans, n, scheme)
        assert tags_to_spans(tags, scheme) == spans
        for other in ("iob1", "iob2", "bioes", "bmes"):
            assert tags_to_spans(convert(tags, scheme, other), other) == spans


def test_iob1_to_iob2():
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]
    assert convert(iob1, "iob1", "iob2") == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG"]
    assert convert(["B-PER", "I-PER", "B-PER", "O"], "iob2", "iob1") == \
        ["I-PER", "I-PER", "B-PER", "O"]


def test_bmes_and_bioes():
    assert convert(["B-NAME", "M-NAME", "E-NAME", "S-ORG", "O"], "bmes", "iob2") == \
        ["B-NAME", "I-NAME", "I-NAME", "B-ORG", "O"]
    assert convert(["B-X", "I-X", "O", "B-Y"], "iob2", "bioes") == ["B-X", "E-X", "O", "S-Y"]


def test_lenient_reading_matches_seqeval_default():
    from seqeval.metrics.sequence_labeling import get_entities

    rng = random.Random(1)
    tags_pool = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    for _ in range(2000):
        tags = [rng.choice(tags_pool) for _ in range(rng.randint(1, 12))]
        ours = [(t, s, e - 1) for t, s, e in tags_to_spans(tags, "iob2")]
        assert ours == get_entities(tags), tags


def test_detect_scheme():
    assert detect_scheme([["I-PER", "I-PER", "O", "I-LOC"]]) == "iob1"
    assert detect_scheme([["B-PER", "I-PER", "O", "B-LOC"]]) == "iob2"
    assert detect_scheme([["B-PER", "E-PER", "S-LOC"]]) == "bioes"
    assert detect_scheme([["B-PER", "M-PER", "E-PER"]]) == "bmes"


# --------------------------------------------------------------------------- reader


def test_read_conll_documents_and_separators(tmp_path):
    f = tmp_path / "a.conll"
    f.write_text("-DOCSTART- -X- O\n\nEU NNP I-ORG\nrejects VBZ O\n\t\nPeter NNP I-PER\n"
                 "\n-DOCSTART- -X- O\n\nBonn NNP I-LOC\n")
    sents = read_conll(f)
    assert [s.tokens for s in sents] == [["EU", "rejects"], ["Peter"], ["Bonn"]]
    assert [s.doc_id for s in sents] == [0, 0, 1]
    assert [s.line for s in sents] == [3, 6, 10]


def test_read_conll_tag_column(tmp_path):
    f = tmp_path / "a.conll"
    f.write_text("EU B-ORG NNP\nrejects O VBZ\n")
    assert read_conll(f, tag_column=1)[0].tags == ["B-ORG", "O"]


def test_read_jsonl(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}\n\n')
    assert read_jsonl(f)[0].tags == ["B-ORG", "O"]


@pytest.mark.parametrize("content, match", [
    ("EU B-ORG\nrejects\n", r"a\.conll:2: expected at least 2 columns"),
    ("EU B_ORG\n", r"a\.conll:1: tag 'B_ORG' fits no scheme"),
    ("", r"a\.conll: no sentences found"),
    ("\n\n-DOCSTART- -X- O\n\n", r"no sentences found"),
])
def test_read_conll_bad_input(tmp_path, content, match):
    f = tmp_path / "a.conll"
    f.write_text(content)
    with pytest.raises(DataError, match=match):
        read_conll(f)


def test_read_conll_not_utf8(tmp_path):
    f = tmp_path / "a.conll"
    f.write_bytes("EU B-ORG\nK\xf6ln B-LOC\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"a\.conll:2: not UTF-8"):
        read_conll(f)


def test_read_jsonl_bad_input(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"tokens": ["EU"], "tags": ["B-ORG", "O"]}\n')
    with pytest.raises(DataError, match=r"a\.jsonl:1: 1 tokens but 2 tags"):
        read_jsonl(f)


# --------------------------------------------------------------------------- alignment and windows


def test_alignment_with_minilm_tokenizer(minilm_tokenizer):
    tok = minilm_tokenizer
    words = ["Zwingmann", "said", "\u200b", "Dubbz\ufeff", "1996-08-22", "."]
    per_word = subwords_per_word(tok, [words])[0]
    assert len(per_word) == len(words)
    assert all(per_word)  # every word has a first subword, even a lone zero-width space
    assert per_word[2] == [tok.unk_token_id]
    assert tok.convert_ids_to_tokens(per_word[0])[0] == "z"  # uncased: "zwingmann" -> z ##wing...
    labels = [1, 0, 0, 2, 0, 0]
    feat = build_features(per_word, labels, max_length=64, overlap=8, wrap=(tok.cls_token_id, tok.sep_token_id))[0]
    assert feat["input_ids"][0] == tok.cls_token_id and feat["input_ids"][-1] == tok.sep_token_id
    first = [i for i, w in enumerate(feat["word_index"]) if w >= 0]
    assert [feat["labels"][i] for i in first] == labels
    assert sum(1 for l in feat["labels"] if l != -100) == len(words)
    # non-first subwords are -100 and the subwords reassemble the words
    flat = [t for sub in per_word for t in sub]
    assert feat["input_ids"][1:-1] == flat


def test_windows_cover_every_word_and_fit():
    rng = random.Random(3)
    for _ in range(300):
        lengths = [rng.randint(1, 4) for _ in range(rng.randint(1, 80))]
        budget = rng.randint(6, 30)
        wins = make_windows(lengths, budget, overlap=rng.randint(0, 10))
        covered = set()
        for s, e in wins:
            assert e > s
            assert sum(lengths[s:e]) <= budget or e - s == 1
            covered.update(range(s, e))
        assert covered == set(range(len(lengths)))
        assert all(b[0] > a[0] for a, b in zip(wins, wins[1:]))


def test_long_sentence_is_windowed_and_merged(minilm_tokenizer):
    tok = minilm_tokenizer
    words = [f"word{i}" for i in range(200)]
    per_word = subwords_per_word(tok, [words])[0]
    labels = [i % 3 for i in range(200)]
    feats = build_features(per_word, labels, max_length=32, overlap=8, wrap=(tok.cls_token_id, tok.sep_token_id))
    assert len(feats) > 1
    assert all(len(f["input_ids"]) <= 32 for f in feats)
    # each window's labels are the words' labels; merging picks one value per word
    values = [{w: labels[w] for w in f["word_index"] if w >= 0} for f in feats]
    merged = merge_windows(200, [tuple(f["window"]) for f in feats], values)
    assert merged == labels
    # the merge prefers the window where the word is farthest from an edge
    assert merge_windows(5, [(0, 3), (1, 5)], [{0: "a", 1: "a", 2: "a"},
                                               {1: "b", 2: "b", 3: "b", 4: "b"}]) == \
        ["a", "a", "b", "b", "b"]


# --------------------------------------------------------------------------- named datasets

EXPECTED = {  # sentences and seqeval-style entity chunks, as SOURCES.md counts them
    "conll2003": {"train": (14041, 23499), "dev": (3250, 5942), "test": (3453, 5648)},
    "wnut17": {"train": (3394, 1975), "dev": (1009, 836), "test": (1287, 1079)},
    "resume": {"train": (3821, 13440), "dev": (463, 1497), "test": (477, 1630)},
    "weibo": {"train": (1350, 1895), "dev": (270, 389), "test": (270, 418)},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_named_datasets_match_published_counts(data_dir, name):
    splits, spec = load_named(name, data_dir)
    scheme = resolve_scheme(splits, spec.scheme)
    for split, (n_sent, n_ent) in EXPECTED[name].items():
        sents = splits[split]
        assert len(sents) == n_sent
        assert sum(len(tags_to_spans(s.tags, scheme)) for s in sents) == n_ent


def test_every_named_dataset_loads(data_dir):
    for name in available_datasets("ner"):
        splits, _ = load_named(name, data_dir)
        assert {"train", "dev", "test"} <= set(splits), name


def test_weibo_strips_segmentation_digit(data_dir):
    splits, _ = load_named("weibo", data_dir)
    assert not any(t[-1].isdigit() and len(t) > 1 for t in splits["train"][0].tokens)


def test_missing_dataset_names_the_files(tmp_path):
    with pytest.raises(DataError, match=r"dataset 'conll2003' not found: looked for .*eng\.train"):
        load_named("conll2003", tmp_path)
    with pytest.raises(DataError, match=r"unknown NER dataset 'conll2004'; known: bc5cdr"):
        load_named("conll2004", tmp_path)


def test_length_batches_group_equal_lengths():
    rng = random.Random(3)
    lengths = [rng.randint(3, 40) for _ in range(5000)]   # a large input: many of each length
    batches = length_batches(lengths, batch_size=8)
    assert sorted(k for b in batches for k in b) == list(range(5000))
    for b in batches:
        assert len(b) <= max(8, 8 * 32 // lengths[b[0]])
        positions = len(b) * lengths[b[0]]
        assert sum(lengths[k] for k in b) >= 0.75 * positions  # padding at most a quarter
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)
    # most batches of a large input hold one length (no padding, no attention mask)
    assert sum(len({lengths[k] for k in b}) == 1 for b in batches) / len(batches) > 0.8
    # a few sentences of many lengths share batches instead of one batch a length
    few = [40, 38, 37, 35, 34, 33, 31, 30]
    assert length_batches(few, batch_size=8) == [list(range(8))]


@pytest.fixture(scope="module")
def tiny_model_and_tokenizer(tiny_encoder):
    from seqlab.models import load_token_classifier, load_tokenizer

    torch.manual_seed(0)
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    return load_token_classifier(str(tiny_encoder), labels).eval(), load_tokenizer(str(tiny_encoder))


def test_predict_words_equals_one_padded_forward(tiny_model_and_tokenizer):
    """Length batches (no padding, no mask) give the labels and probabilities of a plain padded,
    masked forward of each sentence."""
    model, tok = tiny_model_and_tokenizer
    sents = [["EU", "rejects", "German", "call"], ["Peter"], ["to", "boycott", "British", "lamb", "."],
             ["EU", "call"], ["German", "lamb"]]
    got = predict_words(model, tok, sents, max_length=64, overlap=8, batch_size=2, progress=False)
    per_word = subwords_per_word(tok, sents)
    feats = [build_features(w, None, max_length=64, overlap=8, wrap=(tok.cls_token_id, tok.sep_token_id))[0] for w in per_word]
    batch = pad_batch(feats, tok.pad_token_id)
    with torch.no_grad():
        probs = model(input_ids=batch["input_ids"],
                      attention_mask=batch["attention_mask"]).logits.softmax(-1)
    for i, f in enumerate(feats):
        firsts = [pos for pos, w in enumerate(f["word_index"]) if w >= 0]
        p, lab = probs[i, firsts].max(-1)
        assert [l for l, _ in got[i]] == lab.tolist()
        assert [q for _, q in got[i]] == pytest.approx(p.tolist(), abs=1e-5)


def test_one_registry_for_every_task(data_dir, capsys):
    from seqlab.cli import main
    from seqlab.data.registry import DATASETS

    assert {"conll2003", "squad-v1.1", "cmrc2018"} <= set(DATASETS)
    assert DATASETS["cmrc2018"].task == "qa" and DATASETS["wnut17"].task == "ner"
    assert main(["datasets", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert set(rows) == set(DATASETS)
    assert rows["cmrc2018"][1:2] == ["qa"] and rows["cmrc2018"][4] == "yes"
    assert rows["squad-v1.1"][4] == "no"  # the train file is not in the shared data
    assert rows["conll2003"][1] == "ner" and rows["conll2003"][4] == "yes"


@pytest.mark.slow  # tokenises whole corpora
@pytest.mark.parametrize("name", ["conll2003", "wnut17", "weibo"])
def test_running_text_alignment_keeps_the_embedded_encoders_subwords(name, data_dir,
                                                                      minilm_tokenizer):
    """For WordPiece (the embedded MiniLM) the subwords of running text are those the
    pre-split words always had (`is_split_into_words`), on every sentence of the corpus: the
    alignment change leaves `make train` as it was."""
    tok = minilm_tokenizer
    splits, _ = load_named(name, data_dir)
    sents = [s.tokens for split in splits.values() for s in split]
    enc = tok([list(s) for s in sents], is_split_into_words=True, add_special_tokens=False,
              truncation=False)
    old = []
    for i, words in enumerate(sents):
        per_word = [[] for _ in words]
        for tid, wid in zip(enc["input_ids"][i], enc.word_ids(i)):
            if wid is not None:
                per_word[wid].append(tid)
        old.append([sub or [tok.unk_token_id] for sub in per_word])
    assert subwords_per_word(tok, sents) == old


def test_cjk_text_is_split_as_the_runs_training_words_were():
    """A run trained on character-level Chinese splits text one character a word; a run whose
    training words hold no CJK keeps a run of CJK characters as one word (東京 is one word, so
    an English model's entity over it is one entity, not two)."""
    from seqlab.data.alignment import cjk_character_words, split_words
    from seqlab.data.conll import Sentence

    text = "Tanaka flew to 東京都 on Monday, 日本."
    chars, _ = split_words(text)
    runs, offsets = split_words(text, cjk_characters=False)
    assert "東" in chars and "京" in chars and "東京都" not in chars
    assert "東京都" in runs and "日本" in runs and "Tanaka" in runs
    assert all(text[a:b] == w for w, (a, b) in zip(runs, offsets))
    assert cjk_character_words([Sentence(list("我爱北京"), ["O"] * 4)])
    assert not cjk_character_words([Sentence(["Peter", "met", "Anna"], ["O"] * 3)])
    assert not cjk_character_words([Sentence(["東京", "に", "行く"], ["O"] * 3)])
