"""SQuAD-format reading (v1.1 and v2.0, plain, .zip or .gz) and the named QA datasets.

Answers are located by ``answer_start`` and checked against the context. Where the two disagree
(CMRC2018 dev has 200 such answers) the answer is re-located by searching the context for its
text, taking the occurrence nearest the given offset; answers that cannot be found are dropped.
A question none of whose answers can be found stays, with its reference texts, so that scores
count every question as the official scripts do; it has no answer position to train on, so
:func:`trainable` leaves it out of training. Every count is reported, never silently.
"""

from __future__ import annotations

import gzip
import json
import os
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, first_process


@dataclass
class QAExample:
    id: str
    title: str
    context: str
    question: str
    answers: list[dict]  # {"text": str, "answer_start": int}, located in context
    is_impossible: bool = False
    references: list[str] = field(default_factory=list)  # every answer text, for scoring


@dataclass
class ReadReport:
    questions: int = 0
    relocated: int = 0
    dropped_answers: int = 0
    skipped_questions: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.questions} questions, {self.relocated} answers re-located by text search, "
                f"{self.dropped_answers} answers not found in their context and dropped, "
                f"{len(self.skipped_questions)} questions with no answer found in their context "
                "(scored against their reference texts; not trained on)")


def _load_json(path: Path):
    if not path.is_file():
        raise DataError("file not found", str(path))
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.namelist() if m.endswith(".json")]
                if len(members) != 1:
                    raise DataError(f"expected one .json file in the archive, found {members}",
                                    str(path))
                raw = zf.read(members[0])
        elif path.suffix == ".gz":
            raw = gzip.decompress(path.read_bytes())
        else:
            raw = path.read_bytes()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"cannot read: {exc}", str(path)) from None
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise DataError("not UTF-8", str(path)) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON: {exc.msg} (column {exc.colno})", str(path), exc.lineno) from None


def locate(context: str, text: str, start: int) -> int | None:
    """``start`` if the context holds ``text`` there, else the nearest occurrence, else None."""
    if context[start: start + len(text)] == text:
        return start
    best, pos = None, context.find(text)
    while pos != -1 and text:
        if best is None or abs(pos - start) < abs(best - start):
            best = pos
        pos = context.find(text, pos + 1)
    return best


def read_squad(path: str | os.PathLike, *, warn: bool = True) -> tuple[list[QAExample], ReadReport]:
    """Read a SQuAD-format file.

    Raises:
        DataError: malformed JSON, or a question missing ``context``/``question``/``answers``
            (the message names the question id).
    """
    path = Path(path)
    obj = _load_json(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise DataError('expected SQuAD format: {"data": [{"paragraphs": [...]}]}', str(path))
    report = ReadReport()
    examples: list[QAExample] = []
    for a_idx, article in enumerate(obj["data"]):
        title = str(article.get("title", a_idx))
        for p_idx, para in enumerate(article.get("paragraphs", [])):
            if "context" not in para or "qas" not in para:
                missing = "context" if "context" not in para else "qas"
                raise DataError(f"article {title!r} paragraph {p_idx} has no {missing!r}", str(path))
            context = para["context"]
            for qa in para["qas"]:
                qid = str(qa.get("id", f"{title}/{p_idx}/?"))
                for key in ("question", "answers"):
                    if key not in qa:
                        raise DataError(f"question {qid} has no {key!r}", str(path))
                report.questions += 1
                impossible = bool(qa.get("is_impossible", False))
                answers = []
                for ans in qa["answers"]:
                    if "text" not in ans or "answer_start" not in ans:
                        raise DataError(f"question {qid}: an answer lacks 'text' or 'answer_start'",
                                        str(path))
                    text = str(ans["text"]).strip() or str(ans["text"])
                    given = int(ans["answer_start"]) + (len(ans["text"]) - len(ans["text"].lstrip()))
                    pos = locate(context, text, given)
                    if pos is None:
                        report.dropped_answers += 1
                        continue
                    if pos != given:
                        report.relocated += 1
                    answers.append({"text": text, "answer_start": pos})
                if not answers and not impossible:
                    report.skipped_questions.append(qid)
                refs = [str(a["text"]) for a in qa["answers"]] or [""]
                examples.append(QAExample(qid, title, context, str(qa["question"]).strip(),
                                          answers, impossible, refs))
    if not examples:
        raise DataError("no usable questions", str(path))
    if warn and first_process() and (report.relocated or report.dropped_answers
                                     or report.skipped_questions):
        ids = ", ".join(report.skipped_questions[:10])
        more = "" if len(report.skipped_questions) <= 10 else ", ..."
        warnings.warn(f"{path}: {report.summary()}" +
                      (f"; without a found answer: {ids}{more}" if ids else ""), stacklevel=2)
    return examples, report


def trainable(examples: list[QAExample]) -> list[QAExample]:
    """The examples a model can learn from: an answer located in the context, or marked
    impossible (SQuAD v2)."""
    return [ex for ex in examples if ex.answers or ex.is_impossible]


def split_by_title(examples: list[QAExample], eval_share: float = 0.2) -> tuple[list, list]:
    """Deterministic split by article title: titles ranked by CRC32, the first ``eval_share`` of
    them (rounded) go to eval. Questions of one article never straddle the split."""
    titles = sorted({ex.title for ex in examples}, key=lambda t: (zlib.crc32(t.encode()), t))
    held_titles = set(titles[: max(1, round(eval_share * len(titles)))])
    train = [ex for ex in examples if ex.title not in held_titles]
    held = [ex for ex in examples if ex.title in held_titles]
    return train, held


def load_qa(name: str | None, data_dir: str | None, *, train_split: str = "train",
            eval_split: str = "dev", train_file: str | None = None,
            eval_file: str | None = None, roles: tuple[str, ...] = ("train", "dev"),
            options=None) -> tuple[dict[str, list[QAExample]], str]:
    """Return ``({"train": [...], "dev": [...]}, language)``, only the ``roles`` asked for
    (evaluation needs no training file).

    ``squad-v1.1-dev-split`` is non-standard: only the official dev file exists here, so its
    articles are split 80/20 by title (:func:`split_by_title`) into train and eval.
    """
    from .registry import DATASETS, resolve_data_dir, unknown_dataset

    if name is None and options is not None and options.path:
        from .registry import load_source

        splits = load_source(options, qa=True)
        return {role: splits[role] for role in roles if role in splits}, "en"
    if name is None:
        from ..readers import reader_for

        fmt = options.format if options is not None else "auto"
        splits = {}
        for role, path in (("train", train_file), ("dev", eval_file)):
            if path:
                splits[role] = reader_for(path, fmt)(options).read_qa(str(path), role)
        if not splits:
            raise DataError("no data: set data.dataset (squad-v1.1-dev-split, cmrc2018, "
                            "squad-v1.1), data.path (a datasets directory or hub id) or "
                            "data.train_file/dev_file")
        return splits, "en"
    if problem := unknown_dataset(name, "qa"):
        raise DataError(problem)
    spec = DATASETS[name]
    root = resolve_data_dir(data_dir)
    if root is None:
        raise DataError(f"dataset {name!r}: no data directory given (use --data-dir or set SEQLAB_DATA)")
    if name == "squad-v1.1-dev-split":
        examples = read_squad(root / spec.files["all"])[0]
        train, held = split_by_title(examples)
        return {role: part for role, part in (("train", train), ("dev", held)) if role in roles}, "en"
    want = {"train": train_split, "dev": eval_split}
    if name == "cmrc2018":
        want = {"train": "trial" if train_split == "train" else train_split, "dev": eval_split}
    want = {role: split for role, split in want.items() if role in roles}
    out, missing = {}, []
    for role, split in want.items():
        if split not in spec.files:
            raise DataError(f"dataset {name!r} has no split {split!r}; it has "
                            f"{', '.join(spec.files)}")
        p = root / spec.files[split]
        if p.exists():
            out[role] = read_squad(p)[0]
        else:
            missing.append(str(p))
    if missing:
        from .registry import hub_unreachable

        offline = hub_unreachable() if spec.hub else None
        if offline:
            raise DataError(f"dataset {name!r} not found: looked for {', '.join(missing)}; the hub "
                            f"copy {spec.hub[0]!r} was not tried: {offline}")
        if spec.hub:
            try:
                import datasets

                dd = datasets.load_dataset(spec.hub[0])
                conv = {"train": "train", "dev": "validation"}
                for role in want:
                    if role not in out:
                        out[role] = [QAExample(r["id"], r["title"], r["context"], r["question"],
                                               [{"text": t, "answer_start": s} for t, s in
                                                zip(r["answers"]["text"], r["answers"]["answer_start"])],
                                               references=list(r["answers"]["text"]) or [""])
                                     for r in dd[conv[role]]]
                return out, spec.language
            except Exception as exc:
                raise DataError(f"dataset {name!r} not found: looked for {', '.join(missing)}; the "
                                f"hub fallback {spec.hub[0]!r} failed: {type(exc).__name__}") from None
        raise DataError(f"dataset {name!r} not found: looked for {', '.join(missing)}")
    return out, spec.language
