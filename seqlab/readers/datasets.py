"""Hugging Face ``datasets`` data: a directory written by ``save_to_disk``, Parquet, Arrow and CSV
files, and (online) a dataset on the hub by its id.

NER rows hold the words in ``data.tokens_column`` (default ``tokens``) and either their tags in
``data.tags_column`` (default ``ner_tags``: a ``ClassLabel`` sequence, as the hub's NER sets
have, or strings) or entity spans in ``data.spans_column`` (``{"start", "end", "type"}`` over
word indices, ``end`` exclusive; they may nest). QA rows have SQuAD's columns: ``id``,
``title``, ``context``, ``question`` and ``answers`` (``{"text": [...], "answer_start":
[...]}``). Every row is checked as a CoNLL line is: a missing column, an unknown tag or a
length mismatch is one line naming the file, the split and the row.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from ..data.conll import Sentence
from ..data.schemes import spans_to_tags, split_tag
from ..errors import DataError
from . import Reader, register_reader

# the split names seqlab uses, and what the hub's datasets call them
SPLIT_NAMES = {"train": ("train",), "dev": ("validation", "dev", "valid"), "test": ("test",)}
_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv"}


def is_saved_dataset(path: Path) -> bool:
    """A directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return path.is_dir() and ((path / "dataset_info.json").is_file() or
                              (path / "dataset_dict.json").is_file() or
                              (path / "state.json").is_file())


def open_dataset(path: str, subset: str | None = None):
    """``path`` as a ``datasets`` object: a saved directory, a data file, or a hub id.

    Raises:
        DataError: not a saved dataset or a readable file, or a hub id while the hub cannot be
            reached (one line, before any download is attempted).
    """
    import datasets

    p = Path(path).expanduser()
    if p.is_dir():
        if not is_saved_dataset(p):
            raise DataError("a directory that datasets.save_to_disk did not write (no "
                            "dataset_dict.json, dataset_info.json or state.json); expected a "
                            "saved dataset, a data file or a hub id", str(p))
        try:
            return datasets.load_from_disk(str(p))
        except Exception as exc:  # corrupt or of another datasets version
            raise DataError(f"cannot load the saved dataset: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]}", str(p)) from None
    builder = next((b for s, b in _FILE_BUILDERS.items() if p.name.lower().endswith(s)), None)
    if builder is not None:
        if not p.is_file():
            raise DataError("file not found", str(p))
        try:
            return datasets.load_dataset(builder, data_files=str(p), split="train")
        except Exception as exc:
            raise DataError(f"cannot read as {builder}: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]}", str(p)) from None
    if p.exists() or str(path).startswith((".", "/", "~")):
        raise DataError("not a saved dataset directory or a Parquet, Arrow or CSV file", str(p))
    from ..data.registry import hub_unreachable

    offline = hub_unreachable()
    if offline:
        raise DataError(f"data.path {path!r} is neither a local directory nor a file, so it is a "
                        f"hub id, and the hub was not tried: {offline}")
    try:
        return datasets.load_dataset(path, subset)
    except Exception as exc:
        raise DataError(f"data.path {path!r}: the hub dataset could not be loaded: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None


def dataset_splits(obj, where: str, mapping: dict | None = None) -> dict:
    """``{"train": Dataset, "dev": ..., "test": ...}`` of a ``DatasetDict`` by the standard
    names (``validation`` is dev) or by ``mapping`` (``data.splits``: seqlab split -> the
    dataset's split); a single ``Dataset`` is the training split unless mapped otherwise."""
    import datasets

    if isinstance(obj, datasets.Dataset):
        if mapping:
            if len(mapping) != 1:
                raise DataError(f"{where}: one split of data, but data.splits maps "
                                f"{', '.join(mapping)}")
            return {next(iter(mapping)): obj}
        return {"train": obj}
    have = list(obj.keys())
    out = {}
    if mapping:
        for role, name in mapping.items():
            if role not in SPLIT_NAMES:
                raise DataError(f"data.splits: unknown split {role!r}; expected train, dev, test")
            if name not in obj:
                raise DataError(f"{where}: no split {name!r} (data.splits.{role}); it has "
                                f"{', '.join(have)}")
            out[role] = obj[name]
        return out
    for role, names in SPLIT_NAMES.items():
        for name in names:
            if name in obj:
                out[role] = obj[name]
                break
    if not out:
        raise DataError(f"{where}: none of its splits ({', '.join(have)}) is train, validation, "
                        "dev or test; name them with data.splits: {train: ..., dev: ...}")
    return out


def _words(value, where: str, column: str) -> list[str]:
    """A row's words: a list, or (CSV) a JSON/Python list literal or whitespace-separated."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    raise DataError(f"{where}: column {column!r} is not a list: {text[:60]!r}"
                                    ) from None
        else:
            value = text.split()
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{where}: column {column!r} must hold a list, got "
                        f"{type(value).__name__}")
    return list(value)


def _check_columns(ds, where: str, needed: list[str]) -> None:
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise DataError(f"{where}: no column {missing[0]!r}; its columns: "
                        f"{', '.join(ds.column_names)} (name them with data.tokens_column, "
                        "data.tags_column or data.spans_column)")


def _tag_names(ds, column: str) -> list[str] | None:
    import datasets

    feature = ds.features[column]
    inner = getattr(feature, "feature", None)
    if isinstance(feature, list) and feature:
        inner = feature[0]
    return list(inner.names) if isinstance(inner, datasets.ClassLabel) else None


def _spans(value, where: str, n: int) -> list[tuple[str, int, int]]:
    if isinstance(value, dict):  # a Sequence of structs comes back as a dict of lists
        keys = ("start", "end", "type")
        if not set(keys) <= set(value):
            raise DataError(f"{where}: entities need start, end and type; got {', '.join(value)}")
        value = [dict(zip(keys, t)) for t in zip(*(value[k] for k in keys))]
    spans = []
    for k, ent in enumerate(value or [], start=1):
        if not isinstance(ent, dict) or not {"start", "end", "type"} <= set(ent):
            raise DataError(f"{where}: entity {k}: expected {{start, end, type}}, got {ent!r}")
        s, e, t = ent["start"], ent["end"], ent["type"]
        if not (isinstance(s, int) and isinstance(e, int)) or not 0 <= s < e <= n:
            raise DataError(f"{where}: entity {k} [{s}, {e}) {t} is not a non-empty span of the "
                            f"sentence's {n} words (end exclusive)")
        spans.append((str(t), s, e))
    return spans


def sentences_of(ds, where: str, options) -> list[Sentence]:
    """The rows of a ``datasets.Dataset`` as checked sentences."""
    tokens_col, tags_col, spans_col = (options.tokens_column, options.tags_column,
                                       options.spans_column)
    _check_columns(ds, where, [tokens_col, spans_col or tags_col])
    names = None if spans_col else _tag_names(ds, tags_col)
    out = []
    for i, row in enumerate(ds):
        at = f"{where} row {i + 1}"
        words = [str(w) for w in _words(row[tokens_col], at, tokens_col)]
        if not words:
            continue
        if spans_col:
            spans = _spans(row[spans_col], at, len(words))
            sent = Sentence(words, [], 0, i + 1, path=where, one_line=True, spans=spans)
            sent.tags = None if sent.overlap() else spans_to_tags(spans, len(words), "iob2")
        else:
            raw = _words(row[tags_col], at, tags_col)
            if len(raw) != len(words):
                raise DataError(f"{at}: {len(words)} tokens but {len(raw)} tags")
            tags = []
            for t in raw:
                if names is not None and isinstance(t, int):
                    if not 0 <= t < len(names):
                        raise DataError(f"{at}: tag id {t} is outside the ClassLabel's "
                                        f"{len(names)} names")
                    t = names[t]
                elif isinstance(t, int):
                    raise DataError(f"{at}: tag ids without names: column {tags_col!r} is not a "
                                    "ClassLabel sequence; give the tags as strings")
                try:
                    split_tag(str(t))
                except ValueError as exc:
                    raise DataError(f"{at}: {exc}") from None
                tags.append(str(t))
            sent = Sentence(words, tags, 0, i + 1, path=where, one_line=True)
        doc = row.get("doc_id")
        if isinstance(doc, int) and not isinstance(doc, bool):
            sent.doc_id = doc
        out.append(sent)
    if not out:
        raise DataError(f"{where}: no sentences (every row is empty)")
    return out


def questions_of(ds, where: str) -> list:
    """The rows of a ``datasets.Dataset`` in SQuAD's column layout as questions."""
    from ..data.qa import QAExample, locate

    _check_columns(ds, where, ["context", "question", "answers"])
    out = []
    for i, row in enumerate(ds):
        ans = row["answers"]
        if not isinstance(ans, dict) or not {"text", "answer_start"} <= set(ans):
            raise DataError(f"{where} row {i + 1}: answers must be "
                            '{"text": [...], "answer_start": [...]}')
        context = str(row["context"])
        answers = []
        for text, start in zip(ans["text"], ans["answer_start"]):
            text = str(text).strip() or str(text)
            pos = locate(context, text, int(start))
            if pos is not None:
                answers.append({"text": text, "answer_start": pos})
        out.append(QAExample(str(row.get("id", i)), str(row.get("title", "")), context,
                             str(row["question"]).strip(), answers,
                             references=[str(t) for t in ans["text"]] or [""]))
    return out


@register_reader("datasets")
class DatasetsReader(Reader):
    """A ``datasets`` source: a saved directory, a Parquet/Arrow/CSV file, or a hub id."""

    suffixes = tuple(_FILE_BUILDERS)
    directories = True

    def _split(self, path: str, split: str):
        obj = open_dataset(path, getattr(self.options, "subset", None))
        mapping = getattr(self.options, "splits", None)
        parts = dataset_splits(obj, path, {split: mapping[split]} if mapping and split in mapping
                               else None)
        if split not in parts:
            if len(parts) == 1:  # one file or saved Dataset: the split it is given for
                return next(iter(parts.values()))
            raise DataError(f"{path}: no {split} split; it has {', '.join(parts)} (map one with "
                            f"data.splits.{split})")
        return parts[split]

    def read_ner(self, path: str, split: str) -> list:
        return sentences_of(self._split(path, split), f"{path} [{split}]", self.options)

    def read_qa(self, path: str, split: str) -> list:
        return questions_of(self._split(path, split), f"{path} [{split}]")

    def read_all(self, path: str, *, qa: bool = False) -> dict[str, list]:
        """Every split of a dataset that holds several (``data.path``)."""
        obj = open_dataset(path, getattr(self.options, "subset", None))
        parts = dataset_splits(obj, path, getattr(self.options, "splits", None))
        read = (lambda ds, w: questions_of(ds, w)) if qa else \
            (lambda ds, w: sentences_of(ds, w, self.options))
        return {role: read(ds, f"{path} [{role}]") for role, ds in parts.items()}
