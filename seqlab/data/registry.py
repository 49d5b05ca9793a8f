"""Named datasets of every task, read from a data directory, with the hub as fallback online.

The data directory is ``--data-dir`` (``data.data_dir`` in a config), else the ``SEQLAB_DATA``
environment variable. Its layout is that of the files' public releases (see README, "Data").
"""

from __future__ import annotations

import functools
import os
import socket
import zlib
from urllib.parse import urlparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from ..registry import Registry
from .conll import Sentence, read_conll
from .schemes import check_tags, detect_scheme


def _strip_segmentation_digit(token: str) -> str:
    # Weibo: "科0" -> "科"; the digit is the character's position in its word.
    return token[:-1] if len(token) > 1 and token[-1].isdigit() else token


@dataclass(frozen=True)
class NamedDataset:
    """Where a dataset's splits live under the data directory and how to read them."""

    name: str
    files: dict[str, str]  # split -> relative path ("archive.zip!member" for a zip member)
    scheme: str            # NER: the files' tag scheme; QA: "squad" (SQuAD-format JSON)
    language: str = "en"
    task: str = "ner"
    hub: tuple[str, str | None] | None = None  # (hub id, config name)
    token_transform: Callable[[str], str] | None = None
    dev_from_train: float = 0.0  # hold out this share of train as dev when there is no dev file
    notes: str = ""
    tag_column: int = -1
    extra: dict = field(default_factory=dict)


DATASETS: Registry[NamedDataset] = Registry("data.dataset", None)


def register_dataset(spec: NamedDataset) -> NamedDataset:
    """Make ``data.dataset: NAME`` (and ``seqlab datasets``) know ``spec``: a plug-in's data
    files under the data directory, read as the built-in ones are."""
    return DATASETS.add(spec)


for _spec in [
    NamedDataset("conll2003", {"train": "conll2003/eng.train", "dev": "conll2003/eng.testa",
                               "test": "conll2003/eng.testb"}, "iob1",
                 hub=("eriktks/conll2003", None)),
    NamedDataset("wnut17", {"train": "wnut17/wnut17train.conll", "dev": "wnut17/emerging.dev.conll",
                            "test": "wnut17/emerging.test.annotated"}, "iob2",
                 hub=("leondz/wnut_17", None)),
    NamedDataset("conll2002-es", {"train": "conll2002/esp.train", "dev": "conll2002/esp.testa",
                                  "test": "conll2002/esp.testb"}, "iob2", language="es",
                 hub=("eriktks/conll2002", "es")),
    NamedDataset("conll2002-nl", {"train": "conll2002/ned.train", "dev": "conll2002/ned.testa",
                                  "test": "conll2002/ned.testb"}, "iob2", language="nl",
                 hub=("eriktks/conll2002", "nl")),
    NamedDataset("bc5cdr", {"train": "bc5cdr/train.tsv", "dev": "bc5cdr/devel.tsv",
                            "test": "bc5cdr/test.tsv"}, "iob2", hub=("tner/bc5cdr", None)),
    NamedDataset("ncbi-disease", {"train": "ncbi_disease/train.tsv", "dev": "ncbi_disease/devel.tsv",
                                  "test": "ncbi_disease/test.tsv"}, "iob2",
                 hub=("ncbi/ncbi_disease", None)),
    NamedDataset("msra", {"train": "msra_ner/MSRA.zip!msra_train_bio",
                          "test": "msra_ner/MSRA.zip!msra_test_bio"}, "iob2", language="zh",
                 hub=("levow/msra_ner", None), dev_from_train=0.05,
                 notes="MSRA has no dev split: a fixed 5% of train (by a hash of the sentence "
                       "index) is held out as dev."),
    NamedDataset("weibo", {"train": "weibo_ner/weiboNER_2nd_conll.train",
                           "dev": "weibo_ner/weiboNER_2nd_conll.dev",
                           "test": "weibo_ner/weiboNER_2nd_conll.test"}, "iob2", language="zh",
                 token_transform=_strip_segmentation_digit,
                 notes="The token column carries a word-segmentation digit, stripped on read."),
    NamedDataset("resume", {"train": "resume_ner/train.char.bmes", "dev": "resume_ner/dev.char.bmes",
                            "test": "resume_ner/test.char.bmes"}, "bmes", language="zh"),
    NamedDataset("squad-v1.1", {"train": "squad_v1.1/train-v1.1.json",
                                "dev": "squad_v1.1/dev-v1.1.json.zip"}, "squad", task="qa",
                 hub=("rajpurkar/squad", None)),
    NamedDataset("squad-v1.1-dev-split", {"all": "squad_v1.1/dev-v1.1.json.zip"}, "squad",
                 task="qa", notes="Only the official dev file: its articles split 80/20 by title "
                                  "into train and dev (non-standard)."),
    NamedDataset("cmrc2018", {"trial": "cmrc2018/cmrc2018_trial.json",
                              "dev": "cmrc2018/cmrc2018_dev.json"}, "squad", language="zh",
                 task="qa"),
]:
    register_dataset(_spec)


def dataset_found(spec: NamedDataset, root: Path | None) -> bool:
    """Whether every file of the dataset is under ``root``."""
    return root is not None and all(_split_path(root, rel)[0].exists()
                                    for rel in spec.files.values())


@functools.cache
def hub_unreachable() -> str | None:
    """Why the hub cannot be asked (an offline switch is set, or one quick connection attempt
    failed), or None: so that an absent dataset fails in seconds, not after minutes of
    retries."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    try:
        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    except ImportError:
        host = "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as exc:
        return f"{host} is unreachable ({type(exc).__name__})"
    return None


def available_datasets(task: str | None = None) -> list[str]:
    return sorted(n for n, d in DATASETS.items() if task is None or d.task == task)


def unknown_dataset(name: str, task: str, files: str | None = None) -> str | None:
    """Why ``name`` is not a dataset of ``task`` (a line naming the known ones and, when given,
    the config keys of the task's files), or None."""
    if name in DATASETS and DATASETS[name].task == task:
        return None
    return (f"unknown {task.upper()} dataset {name!r}; known: {', '.join(available_datasets(task))}"
            + (f" (or give {files})" if files else ""))


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    value = data_dir or os.environ.get("SEQLAB_DATA")
    return Path(value).expanduser() if value else None


def _split_path(root: Path, rel: str) -> tuple[Path, str | None]:
    if "!" in rel:
        archive, member = rel.split("!", 1)
        return root / archive, member
    return root / rel, None


def _hold_out(sentences: list[Sentence], share: float) -> tuple[list[Sentence], list[Sentence]]:
    keep, held = [], []
    for i, sent in enumerate(sentences):
        (held if zlib.crc32(str(i).encode()) % 10_000 < share * 10_000 else keep).append(sent)
    return keep, held


def load_named(name: str, data_dir: str | os.PathLike | None = None) -> tuple[dict[str, list[Sentence]], NamedDataset]:
    """Read a named dataset's splits. Falls back to the hub when the files are absent.

    Raises:
        DataError: an unknown name, or files absent and the hub unreachable; the message lists
            every path looked for.
    """
    if problem := unknown_dataset(name, "ner"):
        raise DataError(problem)
    spec = DATASETS[name]
    root = resolve_data_dir(data_dir)
    looked = []
    if root is not None:
        paths = {split: _split_path(root, rel) for split, rel in spec.files.items()}
        missing = [str(p) for p, _ in paths.values() if not p.exists()]
        if not missing:
            splits = {split: read_conll(p, member=m, token_transform=spec.token_transform,
                                        tag_column=spec.tag_column)
                      for split, (p, m) in paths.items()}
            if "dev" not in splits and spec.dev_from_train:
                splits["train"], splits["dev"] = _hold_out(splits["train"], spec.dev_from_train)
            return splits, spec
        looked = missing
    where = (f"looked for {', '.join(looked)}" if looked else
             "no data directory given (use --data-dir or set SEQLAB_DATA)")
    offline = hub_unreachable() if spec.hub else None
    if offline:
        raise DataError(f"dataset {name!r} not found: {where}; the hub copy {spec.hub[0]!r} was "
                        f"not tried: {offline}")
    try:
        return _load_from_hub(spec), spec
    except Exception as exc:  # the hub is unreachable or the id moved: report what we looked for
        hub = f"; the hub fallback {spec.hub[0]!r} failed: {type(exc).__name__}: {str(exc)[:200]}" \
            if spec.hub else "; this dataset has no hub copy"
        raise DataError(f"dataset {name!r} not found: {where}{hub}") from None


def _load_from_hub(spec: NamedDataset) -> dict[str, list[Sentence]]:
    if spec.hub is None:
        raise LookupError("no hub id")
    import datasets

    hub_id, config = spec.hub
    dd = datasets.load_dataset(hub_id, config)
    out: dict[str, list[Sentence]] = {}
    rename = {"train": "train", "validation": "dev", "test": "test"}
    for hub_split, split in rename.items():
        if hub_split not in dd:
            continue
        ds = dd[hub_split]
        tag_key = "ner_tags" if "ner_tags" in ds.column_names else "tags"
        names = ds.features[tag_key].feature.names
        out[split] = [Sentence(list(r["tokens"]), [names[t] for t in r[tag_key]])
                      for r in ds if r["tokens"]]
    if "dev" not in out and spec.dev_from_train:
        out["train"], out["dev"] = _hold_out(out["train"], spec.dev_from_train)
    return out


def load_files(train_file: str | None, dev_file: str | None, test_file: str | None, *,
               tag_column: int = -1, options=None) -> dict[str, list[Sentence]]:
    """Read splits from explicit files, each by its reader (:mod:`seqlab.readers`: by
    ``options.format``, else by suffix)."""
    from ..config import DataConfig
    from ..readers import reader_for

    if options is None:
        options = DataConfig(tag_column=tag_column)
    splits = {}
    for split, path in (("train", train_file), ("dev", dev_file), ("test", test_file)):
        if path:
            splits[split] = reader_for(path, options.format)(options).read_ner(str(path), split)
    return splits


def load_source(options, *, qa: bool = False) -> dict[str, list]:
    """Every split of ``data.path`` (a ``datasets`` directory or hub id, or a file of one
    split) through its reader."""
    from ..readers import reader_for

    reader = reader_for(options.path, "datasets" if options.format == "auto" else options.format)
    if not hasattr(reader, "read_all"):
        raise DataError(f"data.path: the {reader.name} reader reads one split a file; give "
                        "data.train_file/dev_file/test_file instead")
    return reader(options).read_all(options.path, qa=qa)


def resolve_scheme(splits: dict[str, list[Sentence]], declared: str) -> str:
    """The declared scheme, or the one detected on the training data; checks every split."""
    first = splits.get("train") or next(iter(splits.values()))
    if declared == "auto" and all(s.spans is not None for s in first):
        declared = "iob2"  # span-annotated: the tags beside the spans are written in IOB2
    scheme = detect_scheme([s.tags for s in first if s.tags is not None]) if declared == "auto" \
        else declared
    for split, sentences in splits.items():
        for sent in sentences:
            if sent.tags is None:  # nested spans: no tags to check
                continue
            try:
                check_tags(sent.tags, scheme)
            except ValueError as exc:
                raise DataError(f"{exc} (split {split}, sentence starting at line {sent.line})") from None
    return scheme
