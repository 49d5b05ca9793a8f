"""``seqlab``: train, evaluate and predict from the command line. Thin: parse, call the library.

Errors caused by input (a config key, a data line, a missing file) are printed as one line and
exit with status 2, without a traceback; a training stopped by a non-finite loss exits with 3.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import SeqlabError


_BF16_HELP = ("NER: run the encoder under bfloat16 autocast; faster on hardware with bf16 units, "
              "and a few predictions may change")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqlab", description="Sequence labelling (NER and span "
                                "QA) with heads and losses for class imbalance: train, evaluate, "
                                "predict, export, serve, and compare them in seeded, paired "
                                "studies.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="fine-tune an encoder from a YAML config")
    t.add_argument("config", help="YAML config (see configs/)")
    t.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. loss.gamma=1 train.seed=7")
    t.add_argument("--data-dir", help="data directory for named datasets (default: $SEQLAB_DATA)")
    t.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in OUTPUT_DIR.incomplete from its newest "
                        "checkpoint, or finish a run that ended but was not renamed (same as "
                        "train.resume=yes)")
    t.add_argument("--recover", action="store_true",
                   help="with --resume: allow train.learning_rate, train.on_nonfinite and "
                        "train.max_grad_norm to change (allowed anyway after a divergence)")
    _progress_option(t)

    e = sub.add_parser("evaluate", help="score a trained model on a dataset split or a file")
    e.add_argument("model_dir")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a named dataset")
    src.add_argument("--file", help="a CoNLL / JSON lines (NER) or SQuAD JSON (QA) file")
    e.add_argument("--split", default="test", help="split of the named dataset (default: test)")
    e.add_argument("--data-dir", help="data directory (default: $SEQLAB_DATA)")
    e.add_argument("--output", help="predictions file (default: predictions_<run>_<data>.<ext> "
                   "in the current directory; never written into MODEL_DIR unless asked)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--bf16", action="store_true", help=_BF16_HELP)
    _backend_options(e)
    _task_options(e, "evaluate")
    _progress_option(e)

    r = sub.add_parser("predict", help="raw text in, JSON lines of entities (or answers) out")
    r.add_argument("model_dir")
    r.add_argument("files", nargs="*", help="text files, one text a line (default: stdin)")
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--bf16", action="store_true", help=_BF16_HELP)
    r.add_argument("--output", help="write JSON lines here instead of stdout")
    _backend_options(r, ray=True)
    _task_options(r, "predict")
    _progress_option(r)
    r.add_argument("--progress", action="store_true",
                   help="a bar of lines done on stderr even when it is not a terminal (it is "
                        "shown on a terminal anyway)")
    ray_opts = r.add_argument_group("bulk prediction on Ray (--backend ray; pip install "
                                    "'seqlab[ray]')")
    ray_opts.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch",
                          help="the model's runtime in each worker")
    ray_opts.add_argument("--workers", type=int, default=2,
                          help="model replicas, each loading the model once (default 2)")
    ray_opts.add_argument("--gpus-per-worker", type=float, default=0.0,
                          help="GPUs per worker (default 0: one CPU each)")
    ray_opts.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl",
                          help="the output shards' format (default jsonl)")
    ray_opts.add_argument("--address", help="join the Ray cluster at this address")

    x = sub.add_parser("export", help="a trained run to ONNX (checked against torch), for "
                       "`predict --backend onnxruntime` and deployment")
    x.add_argument("model_dir")
    x.add_argument("--output", help="the exported directory (default: MODEL_DIR-onnx)")
    x.add_argument("--quantize", choices=["int8"], help="ONNX Runtime's dynamic int8 quantisation")
    _progress_option(x)

    st = sub.add_parser("study", help="a seeded, paired grid of training runs, and its report "
                        "(see configs/study-*.yaml)")
    st.add_argument("config", help="study config (configs/study-*.yaml)")
    st.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. study.seeds=[1,2]")
    st.add_argument("--shard", help="i/n: run only the i-th of n shares of the grid")
    st.add_argument("--dry-run", action="store_true",
                    help="list the runs and estimate their time from a short timed run")
    st.add_argument("--report", action="store_true",
                    help="only aggregate the finished runs into results.json, report.md, figures")
    st.add_argument("--data-dir", help="data directory for named datasets (default: $SEQLAB_DATA)")
    st.add_argument("--backend", choices=["serial", "ray"], default="serial",
                    help="train the cells one after another here (serial), or as Ray Tune "
                         "trials (ray: pip install 'seqlab[ray]'; study.resources per cell)")
    st.add_argument("--address", help="ray: join the Ray cluster at this address (e.g. "
                    "HEAD:6379, from `ray start --head`) instead of starting Ray here")
    _progress_option(st)

    ss = sub.add_parser("study-summary", help="the finished studies side by side: summary.md "
                        "and a figure of each variant's difference to the baseline")
    ss.add_argument("directory", nargs="?", default="benchmarks/study",
                    help="the directory holding the studies' output directories "
                    "(default: benchmarks/study)")
    _progress_option(ss)

    rp = sub.add_parser("report", help="a trained run in one HTML page: scores, curves, errors "
                        "by category, calibration, the sentences it got wrong")
    rp.add_argument("model_dir")
    rp.add_argument("--split", help="the predictions to show (default: the task's: test; "
                    "dev for QA runs)")
    rp.add_argument("--output", help="the HTML file (default: MODEL_DIR/report_<split>.html)")
    _progress_option(rp)

    sv = sub.add_parser("serve", help="an HTTP API and a page for a trained run, with dynamic "
                        "batching and limits",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sv.add_argument("model_dir", help="a trained run or its ONNX export")
    sv.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                    help="run the model with torch or ONNX Runtime")
    sv.add_argument("--threads", type=int, help="the model's threads (torch's or ONNX Runtime's "
                    "intra-op threads; default: one a core)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="the address to listen on (0.0.0.0: every interface)")
    sv.add_argument("--port", type=int, default=8000, help="the TCP port to listen on")
    sv.add_argument("--max-batch", type=int, default=64,
                    help="texts predicted together at most")
    sv.add_argument("--batch-window-ms", type=float, default=5.0,
                    help="how long a batch waits for more requests (ms)")
    sv.add_argument("--max-texts", type=int, default=64, help="texts per request at most")
    sv.add_argument("--max-chars", type=int, default=10_000, help="characters per text at most")
    sv.add_argument("--max-body-bytes", type=int, default=1_000_000,
                    help="request body size at most (bytes)")
    sv.add_argument("--step-chars", type=int, default=8_000,
                    help="characters predicted in one step at most; the steps interleave "
                         "requests, so a small one is not held behind a large one")
    sv.add_argument("--timeout", type=float, default=60.0,
                    help="seconds a request may take, queued and predicted (then 504)")
    sv.add_argument("--max-queue-chars", type=int, default=4_000_000,
                    help="characters waiting at most (then 503 with Retry-After)")
    sv.add_argument("--body-timeout", type=float, default=10.0,
                    help="seconds to receive a request body (then 408)")
    sv.add_argument("--header-timeout", type=float, default=10.0,
                    help="seconds to receive a request's headers (then the connection is closed)")
    sv.add_argument("--keep-alive", type=float, default=5.0,
                    help="seconds an idle keep-alive connection is kept open")
    sv.add_argument("--max-connections", type=int, default=256,
                    help="open connections at most (more are closed at once)")
    _progress_option(sv)

    co = sub.add_parser("corrupt", help="remove each entity with probability P under a seed: "
                        "synthetic missing annotation (partial, or complete but wrong)")
    co_src = co.add_mutually_exclusive_group(required=True)
    co_src.add_argument("--dataset", help="a named NER dataset")
    co_src.add_argument("--file", help="a data file (any reader: CoNLL, JSON lines, Parquet...)")
    co.add_argument("--split", default="train", help="split of the named dataset (default: train)")
    co.add_argument("--data-dir", help="data directory (default: $SEQLAB_DATA)")
    co.add_argument("--p", type=float, required=True, help="the probability an entity is removed")
    co.add_argument("--seed", type=int, default=1, help="the draw's seed (default 1)")
    co.add_argument("--limit", type=int, help="only the first N sentences (as data.limit; "
                    "data.remove_entities draws the same entities)")
    co.add_argument("--mode", choices=["partial", "wrong"], default="partial",
                    help="partial: unannotated words unknown; wrong: written as complete "
                         "(removed entities become O)")
    co.add_argument("--output", required=True, help="the JSON lines to write (and OUTPUT.json, "
                    "how it was made)")
    _progress_option(co)

    d = sub.add_parser("datasets", help="list the named datasets of every task, and whether "
                       "their files are found")
    d.add_argument("--data-dir", help="data directory (default: $SEQLAB_DATA)")
    _progress_option(d)
    h = sub.add_parser("heads", help="list the heads of every task, with their losses and options")
    _progress_option(h)
    return p


def _progress_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (from seqlab or the libraries it calls)")


def _backend_options(p: argparse.ArgumentParser, *, ray: bool = False) -> None:
    p.add_argument("--backend", choices=["torch", "onnxruntime"] + (["ray"] if ray else []),
                   default="torch",
                   help="run the model with torch, or with ONNX Runtime (an exported directory, "
                        "or a run's export, made once and cached)" + (
                            "; ray: spread large inputs over Ray workers (--output is a "
                            "directory of shards)" if ray else ""))
    p.add_argument("--threads", type=int, help="the model's threads (torch's or ONNX Runtime's "
                   "intra-op threads; default: one a core)")


def _task_options(p: argparse.ArgumentParser, command: str) -> None:
    """The options tasks add to ``command``, in a group per task."""
    from .tasks import TASKS

    for name, task in TASKS.items():
        options = task.cli_options.get(command, [])
        if options:
            group = p.add_argument_group(f"options for {name} models")
            for o in options:
                group.add_argument(*o.flags, help=o.help, dest=f"task_{o.dest}", **o.kwargs)


def _extra(args, command: str, task) -> dict:
    """The task options given on the command line; one of another task's is an error."""
    from .tasks import TASKS

    mine = {o.dest for o in task.cli_options.get(command, [])}
    extra = {}
    for name, other in TASKS.items():
        for o in other.cli_options.get(command, []):
            value = getattr(args, f"task_{o.dest}", None)
            if value is None:
                continue
            if o.dest not in mine:
                raise SeqlabError(f"{o.flags[0]} is an option for {name} models; this one is "
                                  f"{task.name}")
            extra[o.dest] = value
    return extra


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
            args.overrides = list(args.overrides) + rest
        elif rest and args.command == "predict" and not any(r.startswith("-") for r in rest):
            args.files = list(args.files) + rest  # files after options
        elif rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
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
        status = {"train": _train, "evaluate": _evaluate, "predict": _predict, "study": _study,
                  "study-summary": _study_summary, "export": _export, "datasets": _datasets,
                  "heads": _heads, "report": _report, "serve": _serve,
                  "corrupt": _corrupt}[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not as an error at the interpreter's exit
        return status
    except SeqlabError as exc:
        print(f"seqlab {args.command}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_status", 2)
    except KeyboardInterrupt:
        print("seqlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `seqlab datasets | head -5`: the reader has gone, stop quietly
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return 141  # 128 + SIGPIPE, as the shell's own commands


def quiet_libraries() -> None:
    """``--no-progress``: no progress bars from transformers and datasets either."""
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _datasets(args) -> int:
    from .data.registry import DATASETS, dataset_found, resolve_data_dir

    root = resolve_data_dir(getattr(args, "data_dir", None))
    print(f"data directory: {root or '(none: set SEQLAB_DATA or --data-dir)'}")
    print(f"{'name':<22}{'task':<6}{'scheme':<8}{'lang':<6}{'found':<7}files")
    for name, spec in sorted(DATASETS.items()):
        found = "yes" if dataset_found(spec, root) else "no"
        files = ", ".join(f"{k}={v}" for k, v in spec.files.items())
        print(f"{name:<22}{spec.task:<6}{spec.scheme:<8}{spec.language:<6}{found:<7}{files}")
    return 0


def _corrupt(args) -> int:
    from .config import DataConfig
    from .data.corrupt import corrupt, write_corrupted
    from .data.registry import load_files, load_named, resolve_scheme
    from .files import check_output_file

    out = check_output_file(args.output)  # before any work
    if args.dataset:
        splits, spec = load_named(args.dataset, args.data_dir)
        if args.split not in splits:
            raise SeqlabError(f"dataset {args.dataset!r} has no split {args.split!r}; it has "
                              f"{', '.join(splits)}")
        sents, scheme = splits[args.split], resolve_scheme({args.split: splits[args.split]},
                                                           spec.scheme)
        source = f"{args.dataset} {args.split}"
    else:
        sents = load_files(args.file, None, None, options=DataConfig())["train"]
        scheme, source = resolve_scheme({"train": sents}, "auto"), args.file
    if args.limit is not None:
        if args.limit < 1:
            raise SeqlabError(f"--limit: expected a number of sentences >= 1, got {args.limit}")
        sents = sents[: args.limit]
    try:
        rows, stats = corrupt(sents, scheme, p=args.p, seed=args.seed, mode=args.mode)
    except ValueError as exc:
        raise SeqlabError(str(exc)) from None
    write_corrupted(rows, stats, out, {"source": source, "scheme": scheme, "p": args.p,
                                       "seed": args.seed, "mode": args.mode,
                                       "limit": args.limit})
    print(f"{stats['removed']} of {stats['entities']} entities removed "
          f"({len(rows)} sentences, {args.mode}) -> {out}")
    return 0


def _report(args) -> int:
    from .report import write_report

    out = write_report(args.model_dir, args.split, args.output)
    print(f"report written to {out}")
    return 0


def _serve(args) -> int:
    from .serve import ServeOptions, serve

    return serve(args.model_dir, ServeOptions(
        backend=args.backend, threads=args.threads, host=args.host, port=args.port,
        max_batch=args.max_batch, batch_window_ms=args.batch_window_ms,
        max_texts=args.max_texts, max_chars=args.max_chars,
        max_body_bytes=args.max_body_bytes, step_chars=args.step_chars, timeout=args.timeout,
        max_queue_chars=args.max_queue_chars, body_timeout=args.body_timeout,
        header_timeout=args.header_timeout, keep_alive=args.keep_alive,
        max_connections=args.max_connections))


def _heads(args) -> int:
    import dataclasses

    from .heads import HEADS

    for name, head in HEADS.items():
        opts = ", ".join(f"model.{f.name}" for f in dataclasses.fields(head.options)) \
            if head.options else "-"
        print(f"{name:<16}task {'/'.join(head.tasks):<5} default loss {head.default_loss:<14} "
              f"losses {', '.join(head.allowed_losses())}; options {opts}")
    return 0


def _train(args) -> int:
    from .assemble import load_config
    from .rundir import prepare_output_dir
    from .train import train_config

    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.resume:
        overrides.append("train.resume=yes")
    if args.recover and not args.resume:
        raise SeqlabError("--recover goes with --resume (it allows a resumed run's learning "
                          "rate, on_nonfinite and max_grad_norm to change)")
    cfg = load_config(args.config, overrides)
    prepare_output_dir(cfg, recover=args.recover)  # fail on an occupied output directory first
    train_config(cfg, progress=not args.no_progress, recover=args.recover,
                 config_path=args.config)
    return 0


def _study(args) -> int:
    from .study import dry_run, headline_table, load_study, parse_shard, report, run_grid

    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"base.data.data_dir={args.data_dir}")
    study = load_study(args.config, overrides)
    parse_shard(args.shard)
    if args.dry_run:
        print(dry_run(study, shard_spec=args.shard))
        return 0
    if args.address and args.backend != "ray":
        raise SeqlabError("--address goes with --backend ray")
    if not args.report and args.backend == "ray":
        if args.shard:
            raise SeqlabError("--shard is for the serial backend; Ray spreads the grid itself")
        from .study.ray_backend import run_grid_ray

        run_grid_ray(study, address=args.address, progress=not args.no_progress)
    elif not args.report:
        run_grid(study, shard_spec=args.shard, progress=not args.no_progress)
    results = report(study)
    if results["losses"]:
        print("\n".join(headline_table(results)))
    print(f"{results['finished_runs']} of {results['planned_runs']} runs finished; report in "
          f"{study.output_dir / 'report.md'}")
    return 0


def _study_summary(args) -> int:
    from .study import write_summary

    studies = write_summary(args.directory)
    print(f"{len(studies)} studies ({', '.join(r['study'] for r in studies)}); summary in "
          f"{Path(args.directory) / 'summary.md'}")
    return 0


def _export(args) -> int:
    from .export import export

    out = export(args.model_dir, args.output, quantize=args.quantize)
    record = json.loads((out / "export.json").read_text(encoding="utf-8"))
    print(f"exported to {out} ({record['precision']}; float32 logits within "
          f"{record['max_abs_logit_diff_vs_torch']:.2g} of torch's)")
    return 0


def _load_run(model_dir: str):
    from .assemble import load_run

    return load_run(model_dir)


def _evaluate(args) -> int:
    from .tasks import EvaluateOptions

    task, run = _load_run(args.model_dir)
    opts = EvaluateOptions(dataset=args.dataset, file=args.file, split=args.split,
                           data_dir=args.data_dir, output=args.output, batch_size=args.batch_size,
                           bf16=args.bf16, progress=not args.no_progress, backend=args.backend,
                           threads=args.threads, extra=_extra(args, "evaluate", task))
    return task.cli_evaluate(opts, run)


def _predict(args) -> int:
    from .memory import fix_mmap_threshold
    from .tasks import PredictOptions

    if args.backend == "ray":
        from .bulk import predict_on_ray

        if not args.output:
            raise SeqlabError("--backend ray writes shards: give --output DIRECTORY")
        if not args.files:
            raise SeqlabError("--backend ray reads files, directories or globs, not stdin")
        shards = predict_on_ray(args.model_dir, list(args.files), args.output,
                                workers=args.workers, batch_size=args.batch_size,
                                runtime=args.runtime, threads=args.threads, fmt=args.format,
                                gpus_per_worker=args.gpus_per_worker, address=args.address)
        print(f"{shards} shards written to {args.output}", file=sys.stderr)
        return 0
    fix_mmap_threshold()  # peak memory flat in the input's length (seqlab.memory)
    task, run = _load_run(args.model_dir)
    # a bar of lines done, on a terminal's stderr only (stdout carries the JSON)
    opts = PredictOptions(files=list(args.files), output=args.output, batch_size=args.batch_size,
                          bf16=args.bf16, progress=not args.no_progress and (
                              args.progress or sys.stderr.isatty()),
                          backend=args.backend,
                          threads=args.threads, extra=_extra(args, "predict", task))
    return task.cli_predict(opts, run)


if __name__ == "__main__":
    sys.exit(main())
