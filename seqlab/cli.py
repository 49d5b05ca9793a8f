"""``seqlab``: train, evaluate and predict from the command line. Thin: parse, call the library.

Errors caused by input (a config key, a data line, a missing file) are printed as one line and
exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from .errors import SeqlabError

_WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|\w+(?:[-'’.]\w+)*|[^\w\s]")


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Split raw text into words with half-open character offsets (CJK: one character a word)."""
    words, offsets = [], []
    for m in _WORD.finditer(text):
        words.append(m.group())
        offsets.append((m.start(), m.end()))
    return words, offsets


_BF16_HELP = ("NER: run the encoder under bfloat16 autocast; faster on hardware with bf16 units, "
              "and a few predictions may change")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqlab", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="fine-tune an encoder from a YAML config")
    t.add_argument("config", help="YAML config (see configs/)")
    t.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. loss.gamma=1 train.seed=7")
    t.add_argument("--data-dir", help="data directory for named datasets (default: $SEQLAB_DATA)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")

    e = sub.add_parser("evaluate", help="score a trained model on a dataset split or a file")
    e.add_argument("model_dir")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a named dataset")
    src.add_argument("--file", help="a CoNLL / JSON lines (NER) or SQuAD JSON (QA) file")
    e.add_argument("--split", default="test", help="split of the named dataset (default: test)")
    e.add_argument("--data-dir", help="data directory (default: $SEQLAB_DATA)")
    e.add_argument("--output", help="predictions file (default: predictions_<run>_<data>.conll "
                   "in the current directory; never written into MODEL_DIR unless asked)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--bf16", action="store_true", help=_BF16_HELP)
    e.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("predict", help="raw text in, JSON lines of entities (or answers) out")
    r.add_argument("model_dir")
    r.add_argument("files", nargs="*", help="text files, one text a line (default: stdin)")
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--bf16", action="store_true", help=_BF16_HELP)
    r.add_argument("--output", help="write JSON lines here instead of stdout")
    r.add_argument("--question", help="QA: the question")
    r.add_argument("--context-file", help="QA: a file holding the context")

    st = sub.add_parser("study", help="a seeded, paired grid of training runs over losses, "
                        "and its report (see configs/study-*.yaml)")
    st.add_argument("config", help="study config (configs/study-*.yaml)")
    st.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. study.seeds=[1,2]")
    st.add_argument("--shard", help="i/n: run only the i-th of n shares of the grid")
    st.add_argument("--dry-run", action="store_true",
                    help="list the runs and estimate their time from a short timed run")
    st.add_argument("--report", action="store_true",
                    help="only aggregate the finished runs into results.json, report.md, figures")
    st.add_argument("--data-dir", help="data directory for named datasets (default: $SEQLAB_DATA)")
    st.add_argument("--no-progress", action="store_true", help="no progress bars")

    sub.add_parser("datasets", help="list the named datasets")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        # Overrides may come after options (`train c.yaml --no-progress loss.gamma=1`).
        args, rest = parser.parse_known_args(argv)
        if rest and args.command in ("train", "study"):
            bad = [r for r in rest if "=" not in r or r.startswith("-")]
            if bad:
                what = ("an unknown option" if bad[0].startswith("-") else
                        "not an override: overrides are dotted.key=value, e.g. train.seed=7")
                print(f"seqlab {args.command}: error: {bad[0]!r} is {what}", file=sys.stderr)
                return 2
        elif rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if rest:
            args.overrides = list(args.overrides) + rest
    except SystemExit as exc:  # argparse has printed its message
        return int(exc.code or 0)
    if args.version:
        from . import __version__

        print(f"seqlab {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "no_progress", False):
        quiet_libraries()
    try:
        return {"train": _train, "evaluate": _evaluate, "predict": _predict, "study": _study,
                "datasets": _datasets}[args.command](args)
    except SeqlabError as exc:
        print(f"seqlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seqlab: interrupted", file=sys.stderr)
        return 130


def quiet_libraries() -> None:
    """``--no-progress``: no progress bars from transformers and datasets either."""
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _datasets(args) -> int:
    from .data.registry import DATASETS

    for name, spec in sorted(DATASETS.items()):
        print(f"{name:<14} {spec.scheme:<6} {spec.language}  " + ", ".join(
            f"{k}={v}" for k, v in spec.files.items()))
    return 0


def _train(args) -> int:
    from .config import load_config
    from .train import prepare_output_dir

    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    cfg = load_config(args.config, overrides)
    prepare_output_dir(cfg)  # fail on an occupied output directory before any work
    train_from_config(cfg, progress=not args.no_progress)
    return 0


def train_from_config(cfg, *, progress: bool = True) -> dict:
    """Train the task a validated config describes, print its scores; return the metrics."""
    if cfg.task == "qa":
        from .tasks.qa import run_training
        return run_training(cfg, progress=progress)

    from accelerate.utils import set_seed

    from .metrics import format_scores
    from .models import load_token_classifier, load_tokenizer
    from .tasks.ner import NerTask, load_corpus
    from .train import train

    corpus = load_corpus(cfg)
    tokenizer = load_tokenizer(cfg.model.encoder)
    task = NerTask(cfg, tokenizer, corpus)
    set_seed(cfg.train.seed)
    model = load_token_classifier(cfg.model.encoder, corpus.labels)
    result = train(cfg, task, model, tokenizer, progress=progress)
    for split in ("dev", "test"):
        if split in result:
            print(format_scores(result[split]["default"], f"{split} (seqeval default mode)"))
            print(f"{split} entity F1: {100 * result[split]['default']['f1']:.2f} "
                  f"(strict {100 * result[split]['strict']['f1']:.2f})")
    print(f"model and metrics in {cfg.train.output_dir}")
    return result


def _study(args) -> int:
    from .study import dry_run, load_study, parse_shard, report, run_grid

    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"base.data.data_dir={args.data_dir}")
    study = load_study(args.config, overrides)
    parse_shard(args.shard)
    if args.dry_run:
        print(dry_run(study, shard_spec=args.shard))
        return 0
    if not args.report:
        run_grid(study, shard_spec=args.shard, progress=not args.no_progress)
    results = report(study)
    done = sum(len(e["seeds"]) for e in results["losses"].values())
    print(f"{done} of {len(study.runs())} runs finished; report in {study.output_dir / 'report.md'}")
    return 0


def _load_run(model_dir: str) -> tuple[dict, object]:
    from .config import load_config

    path = Path(model_dir)
    meta_path = path / "seqlab.json"
    if not meta_path.is_file():
        raise SeqlabError(f"{model_dir}: not a seqlab model directory (no seqlab.json); "
                          "expected the output_dir of `seqlab train`")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    cfg = load_config(path / "config.yaml")
    return meta, cfg


def _dtype(args, meta: dict):
    """The ``--bf16`` autocast dtype, or None; a clear error for a QA model."""
    if not args.bf16:
        return None
    if meta["task"] == "qa":
        raise SeqlabError("--bf16 is available for NER models only")
    import torch

    return torch.bfloat16


def evaluate_output(args, name: str, ext: str) -> Path:
    """Where `seqlab evaluate` writes its predictions: ``--output``, else
    ``predictions_<run>_<name>.<ext>`` in the current directory (never into the trained run),
    checked before any work."""
    path = args.output or f"predictions_{Path(args.model_dir).resolve().name}_{name}.{ext}"
    return check_output_file(path)


def _evaluate(args) -> int:
    meta, cfg = _load_run(args.model_dir)
    dtype = _dtype(args, meta)
    if meta["task"] == "qa":
        from .tasks.qa import run_evaluate
        return run_evaluate(args, meta, cfg)

    from .data.registry import load_files, load_named, resolve_scheme
    from .metrics import format_scores
    from .models import load_token_classifier, load_tokenizer
    from .tasks.ner import NerCorpus, NerTask

    if args.dataset:
        splits, spec = load_named(args.dataset, args.data_dir)
        if args.split not in splits:
            raise SeqlabError(f"dataset {args.dataset!r} has no split {args.split!r}; "
                              f"it has {', '.join(splits)}")
        sents = splits[args.split]
        scheme = resolve_scheme({args.split: sents}, spec.scheme)
        name = f"{args.dataset}-{args.split}"
        out = evaluate_output(args, name, "conll")
    else:
        name = Path(args.file).stem
        out = evaluate_output(args, name, "conll")
        sents = load_files(None, None, args.file, tag_column=cfg.data.tag_column)["test"]
        scheme = resolve_scheme({"test": sents}, "auto")
    from .data.schemes import split_tag
    from .tasks.ner import first_unseen_type

    learnt = {split_tag(label)[1] for label in meta["labels"]} - {None}
    unseen = first_unseen_type(sents, scheme, learnt)
    if unseen:
        where, typ, extra = unseen
        print(f"seqlab evaluate: warning: {where}: gold entity type {typ} was never learnt by this "
              f"model (unlearnt types: {', '.join(extra)}); their entities are scored as missed "
              "(they lower recall, and the type's F1 is 0)", file=sys.stderr)
    corpus = NerCorpus({"eval": sents}, scheme, meta["train_scheme"], meta["labels"], name)
    cfg.model.max_length, cfg.model.window_overlap = meta["max_length"], meta["window_overlap"]
    cfg.train.eval_batch_size = args.batch_size
    tokenizer = load_tokenizer(args.model_dir)
    model = load_token_classifier(args.model_dir)
    task = NerTask(cfg, tokenizer, corpus)
    result = task.evaluate(model, "eval", out_file=out, progress=not args.no_progress,
                           dtype=dtype)
    print(format_scores(result["default"], f"{name}: seqeval default mode (conlleval)"))
    print()
    print(format_scores(result["strict"], f"{name}: seqeval strict mode ({meta['train_scheme']})"))
    print(f"predictions written to {out}")
    return 0


BLOCK_LINES = 2048  # `seqlab predict` reads, predicts and writes this many lines at a time


def iter_lines(files: list[str]):
    """``(text, source, line number)`` for every line of the files (stdin without files), split
    on ``\\n`` only (a ``\\r\\n`` ending is accepted), one at a time.

    Raises:
        SeqlabError: a line that is not UTF-8, naming the source, line and byte offset.
    """
    for f in files or ["-"]:
        name, fh = ("<stdin>", sys.stdin.buffer) if f == "-" else (f, open(f, "rb"))
        try:
            offset = 0
            for lineno, raw in enumerate(fh, start=1):  # binary lines end at b"\n" only
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise SeqlabError(f"{name}:{lineno}: not UTF-8 (byte 0x{raw[exc.start]:02x} at "
                                      f"byte offset {offset + exc.start}); convert the input to "
                                      "UTF-8") from None
                offset += len(raw)
                if text.endswith("\n"):
                    text = text[:-1]
                    if text.endswith("\r"):
                        text = text[:-1]
                yield text, name, lineno
        finally:
            if fh is not sys.stdin.buffer:
                fh.close()


def _blocks(iterable, size: int):
    block = []
    for item in iterable:
        block.append(item)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def check_output_file(path: str | None, what: str = "--output") -> Path | None:
    """Fail before any work on an output file that cannot be written: its directory missing,
    a regular file where a directory should be, or a directory in its place."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise SeqlabError(f"{what} {path}: is a directory, expected a file name")
    parent = p.parent if str(p.parent) else Path(".")
    for up in [parent, *parent.parents]:
        if up.exists() and not up.is_dir():
            raise SeqlabError(f"{what} {path}: {up} is a file, not a directory")
    if not parent.is_dir():
        raise SeqlabError(f"{what} {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise SeqlabError(f"{what} {path}: the directory {parent} is not writable")
    return p


class AtomicOutput:
    """Write to ``path`` through a temporary file beside it, renamed over it on success: a
    failure half-way leaves any earlier file of that name as it was. Without a path, stdout."""

    def __init__(self, path: Path | None):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.partial") if path else None

    def __enter__(self):
        self.fh = open(self.tmp, "w", encoding="utf-8") if self.tmp else sys.stdout
        return self.fh

    def __exit__(self, exc_type, *_):
        if self.tmp is None:
            self.fh.flush()
            return False
        self.fh.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
        return False


def _predict(args) -> int:
    meta, cfg = _load_run(args.model_dir)
    dtype = _dtype(args, meta)
    if meta["task"] == "qa":
        from .tasks.qa import run_predict
        return run_predict(args, meta, cfg)

    for f in args.files:  # before any work
        if not Path(f).is_file():
            raise SeqlabError(f"{f}: file not found")
    out_path = check_output_file(args.output)

    from .models import load_token_classifier, load_tokenizer
    from .tasks.ner import decode_entities, predict_words

    tokenizer = load_tokenizer(args.model_dir)
    model = load_token_classifier(args.model_dir)
    with AtomicOutput(out_path) as out:
        # blocks of lines: bounded memory, and output from the first block on
        for block in _blocks(iter_lines(args.files), BLOCK_LINES):
            texts = [text for text, _, _ in block]
            split = [split_words(t) for t in texts]
            preds = predict_words(model, tokenizer, [w for w, _ in split],
                                  max_length=meta["max_length"], overlap=meta["window_overlap"],
                                  batch_size=args.batch_size, progress=False, dtype=dtype)
            for text, (words, offsets), pred in zip(texts, split, preds):
                ents = decode_entities(words, pred, meta["labels"], meta["train_scheme"], offsets,
                                       text)
                ents = [{k: e[k] for k in ("text", "type", "start", "end", "score")} for e in ents]
                out.write(json.dumps({"text": text, "entities": ents}, ensure_ascii=False) + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
