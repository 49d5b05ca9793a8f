"""seqlab NER training and prediction side by side with Hugging Face's ways, one run.

    make bench-ner                                   # full CoNLL-2003, 3 epochs (about 75 minutes here)
    python scripts/bench_ner.py --epochs 1 --limit 2000   # a shorter side-by-side
    python scripts/bench_ner.py --loops seqlab,trainer    # some of the loops only

Each training loop runs in a process of its own (so each peak RSS is its own), on the same
encoder, data, batch size, learning rate and seed:

- ``seqlab``: ``seqlab train`` as configured by default (length-grouped batches, fused AdamW,
  warmup, weight decay, gradient clipping);
- ``seqlab-compile``: the same with ``train.compile: true`` (compile time included);
- ``seqlab-bf16``: the same with ``train.bf16: true`` (for GPUs and CPUs with bf16 units);
- ``trainer``: the Hugging Face ``Trainer`` with its speed flags,
  ``train_sampling_strategy="group_by_length"`` and ``optim="adamw_torch_fused"``, and seqlab's
  weight decay, warmup ratio and clipping; data truncated at ``max_length`` as ``run_ner.py`` does;
- ``reference``: a loop written the way ``run_ner_no_trainer.py`` does it (truncation at
  ``max_length``, shuffled random batches, ``DataCollatorForTokenClassification``, AdamW, linear
  decay without warmup).

Every model is scored by the same code: seqlab's evaluation, every word of the gold dev and test
sentences (longer sentences windowed), seqeval default mode. Prints wall time per epoch, training
time, tokens/s (real, and counting padding), peak RSS, dev/test F1, and prediction sentences/s
of the first loop's model against ``transformers.pipeline("token-classification",
aggregation_strategy="first", batch_size=64)``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqlab.assemble import config_from_dict
from seqlab.heads import get_head
from seqlab.data.alignment import split_words
from seqlab.data.schemes import convert
from seqlab.models import load_token_classifier, load_tokenizer
from seqlab.tasks.ner import NerTask
from seqlab.tasks.ner_corpus import load_corpus
from seqlab.tasks.ner_files import score_and_write
from seqlab.tasks.ner_inference import entity_records, predict_sentences, predict_words
from seqlab.train import train

LOOPS = ("seqlab", "seqlab-compile", "seqlab-bf16", "trainer", "reference")


def _config(args, out_dir: Path, compiled: bool = False, bf16: bool = False):
    return config_from_dict({
        "task": "ner", "data": {"dataset": "conll2003", "data_dir": args.data_dir,
                                "limit": args.limit, "eval_limit": args.eval_limit},
        "model": {"encoder": args.encoder, "max_length": args.max_length},
        "loss": {"name": "ce"},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size,
                  "learning_rate": args.lr, "seed": args.seed, "output_dir": str(out_dir),
                  "overwrite": True, "compile": compiled, "bf16": bf16}})


def run_seqlab(args, out_dir: Path, compiled: bool = False, bf16: bool = False) -> dict:
    cfg = _config(args, out_dir, compiled, bf16)
    corpus = load_corpus(cfg)
    tok = load_tokenizer(cfg.model.encoder)
    task = NerTask(cfg, tok, corpus)
    torch.manual_seed(args.seed)
    model = load_token_classifier(cfg.model.encoder, corpus.labels)
    res = train(cfg, task, model, tok, progress=not args.no_progress)
    epochs = [json.loads(l) for l in (out_dir / "metrics.jsonl").read_text().splitlines()]
    epoch_times = [e["epoch_time_s"] for e in epochs if e["event"] == "eval"]
    return {"epoch_s": epoch_times, "train_s": res["train_time_s"],
            "tok_s_real": res["train_tokens_per_s"],
            "tok_s_padded": res["train_tokens_per_s_with_padding"],
            "dev_f1": res["dev"]["default"]["f1"], "test_f1": res["test"]["default"]["f1"]}


def _hf_rows(args, corpus, tok, split: str) -> list[dict]:
    """Truncated at max_length, labels on first subwords: the way run_ner.py prepares data."""
    l2i = {l: i for i, l in enumerate(corpus.labels)}
    sents = corpus.splits[split]
    enc = tok([s.tokens for s in sents], is_split_into_words=True, truncation=True,
              max_length=args.max_length)
    rows = []
    for i, s in enumerate(sents):
        tags = convert(s.tags, corpus.scheme, "iob2")
        prev, lab = None, []
        for w in enc.word_ids(i):
            lab.append(-100 if w is None or w == prev else l2i[tags[w]])
            prev = w
        rows.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                     "labels": lab})
    return rows


class CountingCollator:
    """DataCollatorForTokenClassification, counting the real and padded positions it hands out."""

    def __init__(self, tok):
        from transformers import DataCollatorForTokenClassification

        self.inner = DataCollatorForTokenClassification(tok)
        self.real = self.padded = 0

    def __call__(self, rows):
        batch = self.inner(rows)
        self.real += int(batch["attention_mask"].sum())
        self.padded += batch["attention_mask"].numel()
        return batch


def _score_with_seqlab(args, corpus, tok, model) -> dict:
    """Every word of the gold dev and test sentences, by the code that scores seqlab's runs."""
    task = NerTask(_config(args, Path(tempfile.gettempdir())), tok, corpus)
    model.eval()
    return {f"{split}_f1": task.evaluate(model, split, progress=False)["default"]["f1"]
            for split in ("dev", "test")}


def run_trainer(args, work: Path) -> dict:
    """The Hugging Face Trainer with its speed flags: length-grouped sampling and fused AdamW,
    with seqlab's weight decay, warmup and gradient clipping."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    cfg = _config(args, work)
    defaults = cfg.train
    corpus = load_corpus(cfg)
    tok = load_tokenizer(args.encoder)
    rows = _hf_rows(args, corpus, tok, "train")
    train_set = Dataset.from_list(rows).map(lambda r: {"length": len(r["input_ids"])})
    torch.manual_seed(args.seed)
    model = load_token_classifier(args.encoder, corpus.labels)
    collate = CountingCollator(tok)
    targs = TrainingArguments(
        output_dir=str(work / "trainer"), per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, num_train_epochs=args.epochs, weight_decay=defaults.weight_decay,
        warmup_steps=defaults.warmup_ratio, lr_scheduler_type="linear",
        max_grad_norm=defaults.max_grad_norm, train_sampling_strategy="group_by_length",
        optim="adamw_torch_fused", seed=args.seed, save_strategy="no", eval_strategy="no",
        logging_steps=50, report_to="none", use_cpu=not torch.cuda.is_available(),
        disable_tqdm=args.no_progress)
    trainer = Trainer(model=model, args=targs, train_dataset=train_set, data_collator=collate,
                      processing_class=tok)
    out = trainer.train()
    train_s = out.metrics["train_runtime"]
    # the Trainer reports the whole run's time: the epochs' mean
    return {"epoch_s": [train_s / args.epochs], "epoch_mean": True, "train_s": train_s,
            "tok_s_real": collate.real / train_s, "tok_s_padded": collate.padded / train_s,
            "padding_share": 1 - collate.real / collate.padded,
            **_score_with_seqlab(args, corpus, tok, model)}


def run_reference(args, work: Path) -> dict:
    """The run_ner_no_trainer.py way, written out."""
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    corpus = load_corpus(_config(args, work))
    torch.manual_seed(args.seed)
    tok = load_tokenizer(args.encoder)
    model = load_token_classifier(args.encoder, corpus.labels)
    collate = CountingCollator(tok)
    g = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(_hf_rows(args, corpus, tok, "train"), batch_size=args.batch_size,
                        shuffle=True, collate_fn=collate, generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    steps = math.ceil(len(loader) * args.epochs)
    sched = get_scheduler("linear", optimizer=opt, num_warmup_steps=0, num_training_steps=steps)
    epoch_times, done = [], 0
    for epoch in range(math.ceil(args.epochs)):
        model.train()
        t0 = time.perf_counter()
        for batch in loader:
            out = model(**batch)
            out.loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            done += 1
            if done >= steps:
                break
        epoch_times.append(time.perf_counter() - t0)
    train_s = sum(epoch_times)
    return {"epoch_s": epoch_times, "train_s": train_s, "tok_s_real": collate.real / train_s,
            "tok_s_padded": collate.padded / train_s,
            "padding_share": 1 - collate.real / collate.padded,
            **_score_with_seqlab(args, corpus, tok, model)}


def run_loop(args) -> int:
    """One training loop in this process (the driver starts one process per loop, so that each
    peak memory is its own); the figures go to ``--result`` as JSON."""
    work = Path(args.workdir)
    name = args.loop
    if name.startswith("seqlab"):
        res = run_seqlab(args, work / name, compiled=name == "seqlab-compile",
                         bf16=name == "seqlab-bf16")
    elif name == "trainer":
        res = run_trainer(args, work)
    else:
        res = run_reference(args, work)
    Path(args.result).write_text(json.dumps(res) + "\n")
    return 0


def spawn_loop(args, name: str, work: Path) -> dict:
    """Run one loop in a child process; its peak RSS from the kernel's accounting of that child."""
    result = work / f"{name}.json"
    cmd = [sys.executable, __file__, "--loop", name, "--result", str(result), "--workdir",
           str(work), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--max-length", str(args.max_length), "--lr", str(args.lr), "--seed", str(args.seed),
           "--encoder", args.encoder]
    for flag, value in (("--limit", args.limit), ("--eval-limit", args.eval_limit),
                        ("--data-dir", args.data_dir)):
        if value is not None:
            cmd += [flag, str(value)]
    if args.no_progress:
        cmd.append("--no-progress")
    print(f"--- {name}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench_ner: the {name} loop failed (exit {proc.returncode})")
    res = json.loads(result.read_text())
    res["peak_rss"] = usage.ru_maxrss * 1024  # KiB on Linux
    res["process_s"] = time.perf_counter() - t0
    return res


def predict_speed(model_dir: Path, corpus, repeats: int) -> dict:
    """Sentences/s of seqlab's prediction (fp32, and bf16 autocast) and of the pipeline, timed
    in turn on the same text, with the test F1 of seqlab's predictions in both precisions."""
    from transformers import pipeline

    sents = corpus.splits["test"]
    tok = load_tokenizer(str(model_dir))
    model = load_token_classifier(str(model_dir))
    meta = json.loads((model_dir / "seqlab.json").read_text())
    head = get_head("softmax")(config_from_dict({"task": "ner", "eval": {"decode": "argmax"}}),
                               meta["labels"])
    texts = [" ".join(s.tokens) for s in sents]
    ner = pipeline("token-classification", model=str(model_dir), aggregation_strategy="first",
                   batch_size=64, device=-1)
    variants = {"seqlab": None, "seqlab bf16": torch.bfloat16}
    times = {**{name: [] for name in variants}, "pipeline": []}
    f1 = {}
    for _ in range(repeats):
        for name, dtype in variants.items():
            # text in, entities with character offsets out, as `seqlab predict` does it
            t0 = time.perf_counter()
            split = [split_words(t) for t in texts]
            preds = predict_sentences(model, tok, head, [w for w, _ in split],
                                      max_length=meta["max_length"], overlap=meta["window_overlap"],
                                      batch_size=64, progress=False, dtype=dtype)["argmax"]
            for text, (words, offsets), pred in zip(texts, split, preds):
                entity_records(pred.entities, offsets, text)
            times[name].append(len(texts) / (time.perf_counter() - t0))
            if name not in f1:  # scored on the gold words, outside the timing
                preds = predict_words(model, tok, [s.tokens for s in sents],
                                      max_length=meta["max_length"], overlap=meta["window_overlap"],
                                      batch_size=64, progress=False, dtype=dtype)
                tags = [[corpus.labels[i] for i, _ in p] for p in preds]
                result = score_and_write(sents, tags, corpus.scheme, corpus.train_scheme, None)
                f1[name] = result["default"]["f1"]
        t0 = time.perf_counter()
        ner(texts)
        times["pipeline"].append(len(texts) / (time.perf_counter() - t0))
    out = {name: sorted(v)[len(v) // 2] for name, v in times.items()}
    out["f1"] = f1
    return out


def predict_only(args) -> int:
    model_dir = Path(args.predict_only)
    meta = json.loads((model_dir / "seqlab.json").read_text())
    cfg = config_from_dict({"task": "ner", "data": {"dataset": meta.get("dataset", "conll2003"),
                                                    "data_dir": args.data_dir,
                                                    "eval_limit": args.eval_limit}})
    corpus = load_corpus(cfg, meta["labels"])
    speed = predict_speed(model_dir, corpus, args.predict_repeats)
    print(f"\n{model_dir}, test split, median of {args.predict_repeats} interleaved runs, "
          f"torch threads {torch.get_num_threads()}")
    print("| | sentences/s | x pipeline | test F1 |\n|---|---:|---:|---:|")
    for name in ("seqlab", "seqlab bf16", "pipeline"):
        f1 = f"{100 * speed['f1'][name]:.2f}" if name in speed["f1"] else "-"
        print(f"| {name} | {speed[name]:.0f} | {speed[name] / speed['pipeline']:.2f} | {f1} |")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--limit", type=int, help="first N training sentences only")
    p.add_argument("--eval-limit", type=int, help="first N dev/test sentences only")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--encoder", default="minilm-l6")
    p.add_argument("--data-dir", default=os.environ.get("SEQLAB_DATA"))
    p.add_argument("--loops", default="seqlab,seqlab-compile,trainer,reference",
                   help=f"comma-separated, from {', '.join(LOOPS)}; the first is timed for "
                        "prediction and is the numerator of the ratios")
    p.add_argument("--predict-repeats", type=int, default=3)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--output", help="write the figures as JSON here")
    p.add_argument("--predict-only", metavar="MODEL_DIR",
                   help="skip training: time prediction of this trained model directory")
    p.add_argument("--loop", choices=LOOPS, help=argparse.SUPPRESS)  # a child process's loop
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.predict_only:
        return predict_only(args)
    if args.loop:
        return run_loop(args)
    loops = [name.strip() for name in args.loops.split(",") if name.strip()]
    unknown = [name for name in loops if name not in LOOPS]
    if unknown or not loops:
        p.error(f"--loops: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(LOOPS)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        res = {name: spawn_loop(args, name, work) for name in loops}
        speed = None
        if loops[0].startswith("seqlab"):
            cfg = _config(args, work / loops[0])
            corpus = load_corpus(cfg, json.loads((work / loops[0] / "seqlab.json").read_text())["labels"])
            speed = predict_speed(work / loops[0], corpus, args.predict_repeats)
    mib = 2 ** 20

    def row(label, fmt):
        return [label, *(fmt(res[name]) for name in loops)]

    rows = [row("wall time per epoch (s)", lambda r: ", ".join(f"{t:.0f}" for t in r["epoch_s"])
                + (" (mean)" if r.get("epoch_mean") else "")),
            row("training time (s), compile included", lambda r: f"{r['train_s']:.0f}"),
            row("train tokens/s, real tokens", lambda r: f"{r['tok_s_real']:.0f}"),
            row("train tokens/s, with padding", lambda r: f"{r['tok_s_padded']:.0f}"),
            row("peak RSS of the process (MiB)", lambda r: f"{r['peak_rss'] / mib:.0f}"),
            row("dev entity F1 (seqeval default)", lambda r: f"{100 * r['dev_f1']:.2f}"),
            row("test entity F1 (seqeval default)", lambda r: f"{100 * r['test_f1']:.2f}")]
    print(f"\nCoNLL-2003, {args.encoder}, epochs {args.epochs}, batch {args.batch_size}, max_length "
          f"{args.max_length}, lr {args.lr}, seed {args.seed}, train limit {args.limit}, "
          f"eval limit {args.eval_limit}, torch threads {torch.get_num_threads()}")
    print("| | " + " | ".join(loops) + " |\n|---|" + "---:|" * len(loops))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    first = res[loops[0]]
    for name in loops[1:]:
        share = res[name].get("padding_share")
        print(f"real tokens/s {loops[0]} / {name}: {first['tok_s_real'] / res[name]['tok_s_real']:.2f}"
              + (f"; {name} padding share {100 * share:.0f}%" if share is not None else ""))
    if speed:
        print(f"\nprediction, {loops[0]}'s model, test set, median of {args.predict_repeats}:")
        print("| | sentences/s | x pipeline | test F1 |\n|---|---:|---:|---:|")
        for name in ("seqlab", "seqlab bf16", "pipeline"):
            f1 = f"{100 * speed['f1'][name]:.2f}" if name in speed["f1"] else "-"
            print(f"| {name} | {speed[name]:.0f} | {speed[name] / speed['pipeline']:.2f} | {f1} |")
    if args.output:
        Path(args.output).write_text(json.dumps({"loops": res, "rows": rows, "predict": speed},
                                                indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
