"""Shared fixtures: tiny offline encoders built in code, fixture data, the shared data directory."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per worker (and per process it starts): two workers of two threads each on
    # two cores oversubscribe them, and a tiny model's steps then take ten times as long
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

FIXTURES = Path(__file__).parent / "fixtures"
DATA_DIR = Path(os.environ.get("SEQLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def build_tiny_encoder(directory: Path, texts: list[str], *, hidden: int = 32, layers: int = 2,
                       vocab_size: int = 400, max_positions: int = 512,
                       vocab_file: Path | None = None) -> Path:
    """A random BERT with a WordPiece vocab trained on ``texts`` (or read from ``vocab_file``,
    one token a line), saved as a transformers dir. The trainer breaks ties in a random order,
    so a trained vocab, and what a tiny model learns with it, differs from session to session."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    if vocab_file is not None:
        tokens = vocab_file.read_text(encoding="utf-8").splitlines()
        vocab = [(t, i) for i, t in enumerate(tokens)]
    else:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=[
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        tok.train_from_iterator(texts, trainer)
        vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    (directory / "vocab.txt").write_text("\n".join(t for t, _ in vocab) + "\n", encoding="utf-8")
    fast = BertTokenizerFast(vocab=dict(vocab), do_lower_case=True)  # transformers >= 5
    if fast.vocab_size != len(vocab):  # transformers 4
        fast = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True)
    fast.save_pretrained(directory)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden,
                        max_position_embeddings=max_positions)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    return directory


def fixture_texts() -> list[str]:
    lines = []
    for name in ("train.conll", "dev.conll", "test.conll"):
        words = [l.split()[0] for l in (FIXTURES / name).read_text().splitlines()
                 if l.strip() and not l.startswith("-DOCSTART-")]
        lines.append(" ".join(words))
    return lines


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    # the vocab once trained on fixture_texts() * 3, kept so that every session has the same
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"), fixture_texts() * 3,
                              vocab_file=FIXTURES / "tiny-vocab.txt")


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared data directory {DATA_DIR} not found (set SEQLAB_DATA)")
    return DATA_DIR


@pytest.fixture(scope="session")
def minilm_tokenizer():
    try:
        from seqlab.models import load_tokenizer

        return load_tokenizer("minilm-l6")
    except Exception as exc:  # the package is installed by `make install`
        pytest.skip(f"embedded encoder unavailable: {exc}")


TINY_TRAINING = {"model.max_length": 24, "train.epochs": 15, "train.batch_size": 2,
                 "train.learning_rate": 2e-3, "train.warmup_ratio": 0, "train.log_every": 5}


def train_args(encoder: Path, out: Path, *extra: str, config: str = "conll2003.yaml",
               train: Path | None = FIXTURES / "train.conll",
               dev: Path | None = FIXTURES / "dev.conll",
               test: Path | None = FIXTURES / "test.conll", **keys) -> list[str]:
    """The one `seqlab train` command line of the tests: a config of configs/ with its named
    dataset replaced by the files (None: no such split), the encoder and the run directory,
    then :data:`TINY_TRAINING` with ``keys`` over it (``train__epochs=4`` sets
    ``train.epochs``; None drops a key), then ``extra`` overrides as they are."""
    settings = {**TINY_TRAINING, **{k.replace("__", "."): v for k, v in keys.items()}}
    files = {"data.train_file": train, "data.dev_file": dev, "data.test_file": test}
    return ["train", str(Path(__file__).parents[1] / "configs" / config), "data.dataset=null",
            *(f"{k}={v}" for k, v in files.items() if v is not None), f"model.encoder={encoder}",
            *(f"{k}={v}" for k, v in settings.items() if v is not None),
            f"train.output_dir={out}", "--no-progress", *extra]


def ner_train_args(encoder: Path, out: Path, *extra: str) -> list[str]:
    """`seqlab train` of a tiny NER model on the fixture files."""
    return train_args(encoder, out, *extra)


@pytest.fixture(scope="session")
def ner_run(tmp_path_factory, tiny_encoder) -> Path:
    """A tiny NER run, trained once for every test that reads one (predict, evaluate, export,
    serve, the browser); tests write their own files beside it, never into it."""
    from seqlab.cli import main

    out = tmp_path_factory.mktemp("run") / "model"
    assert main(ner_train_args(tiny_encoder, out)) == 0
    return out


@pytest.fixture(scope="session")
def served_run(ner_run) -> Path:
    return ner_run


# Tests that use a trained run (or train one) are end-to-end: `make test-fast` leaves them out.
_TRAINED = {"trained", "run", "exported", "uninterrupted", "head_runs", "served_run", "ner_run"}


# ...and so are tests that train, run a grid or compile themselves, found by what their code does
_DOES_SLOW_WORK = re.compile(r'\b(?:ner_)?train_args\(|main\(\[\s*"train"|-m"?,?\s*"?seqlab\.cli'
                             r'|torch\.compile\(|run_grid\((?![^)]*runner=)|\["train", str\(')


def _does_slow_work(item) -> bool:
    import inspect

    fn = getattr(item, "function", None)
    try:
        return fn is not None and bool(_DOES_SLOW_WORK.search(inspect.getsource(fn)))
    except (OSError, TypeError):
        return False


def pytest_collection_modifyitems(items):
    for item in items:
        if _TRAINED & set(getattr(item, "fixturenames", ())) or _does_slow_work(item):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def synthetic_ner(tmp_path_factory) -> Path:
    """A learnable synthetic NER set (train 240, dev 60, test 60 sentences) as JSON lines."""
    from families import synthetic_ner as make, write_jsonl

    d = tmp_path_factory.mktemp("synthetic")
    for split, n, seed in (("train", 240, 1), ("dev", 60, 2), ("test", 60, 3)):
        write_jsonl(d / f"{split}.jsonl", make(n, seed))
    return d


@pytest.fixture(scope="session")
def family_encoders(tmp_path_factory, synthetic_ner) -> dict[str, Path]:
    """Every encoder family's stand-in (tests/families.py), built once per session on the
    synthetic sentences and the fixture texts."""
    import json as _json

    from families import FAMILIES, build_family

    texts = fixture_texts()
    for split in ("train", "dev"):
        for line in (synthetic_ner / f"{split}.jsonl").read_text().splitlines():
            texts.append(" ".join(_json.loads(line)["tokens"]))
    root = tmp_path_factory.mktemp("families")
    return {f: build_family(f, root / f, texts) for f in FAMILIES}
