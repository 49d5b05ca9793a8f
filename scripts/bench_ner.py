"""seqlab NER training and prediction side by side with a Hugging Face-style reference, one run.

    make bench-ner                                   # full CoNLL-2003, 3 epochs (about an hour here)
    python scripts/bench_ner.py --epochs 1 --limit 2000   # a shorter side-by-side

The reference loop is written the way transformers' ``run_ner_no_trainer.py`` does it: tokenise
with truncation at ``max_length``, shuffled random batches, ``DataCollatorForTokenClassification``
dynamic padding, AdamW, linear decay without warmup; scored with seqeval on the (truncated)
first-subword predictions. Both runs use the same encoder, data, batch size, learning rate, seed.
Prints wall time per epoch, training tokens/s (real tokens, and counting padding), peak RSS,
dev/test entity F1 of both, and prediction sentences/s of ``seqlab predict`` against
``transformers.pipeline("token-classification", aggregation_strategy="first", batch_size=64)``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqlab.config import config_from_dict  # noqa: E402
from seqlab.data.schemes import convert  # noqa: E402
from seqlab.metrics import entity_scores  # noqa: E402
from seqlab.models import load_token_classifier, load_tokenizer  # noqa: E402
from seqlab.data.alignment import split_words  # noqa: E402
from seqlab.tasks.ner import (NerTask, decode_entities, load_corpus, predict_words,  # noqa: E402
                              score_and_write)
from seqlab.train import train  # noqa: E402


class PeakRSS:
    """Sample the process's resident set size in a thread; report the peak over the block."""

    def __enter__(self):
        self.peak, self._stop = 0, False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)
            time.sleep(0.1)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()


def run_seqlab(args, out_dir: Path) -> dict:
    cfg = config_from_dict({
        "task": "ner", "data": {"dataset": "conll2003", "data_dir": args.data_dir,
                                "limit": args.limit, "eval_limit": args.eval_limit},
        "model": {"encoder": args.encoder, "max_length": args.max_length},
        "loss": {"name": "ce"},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size,
                  "learning_rate": args.lr, "seed": args.seed, "output_dir": str(out_dir),
                  "overwrite": True}})
    corpus = load_corpus(cfg)
    tok = load_tokenizer(cfg.model.encoder)
    task = NerTask(cfg, tok, corpus)
    torch.manual_seed(args.seed)
    model = load_token_classifier(cfg.model.encoder, corpus.labels)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        res = train(cfg, task, model, tok, progress=not args.no_progress)
        wall = time.perf_counter() - t0
    epochs = [json.loads(l) for l in (out_dir / "metrics.jsonl").read_text().splitlines()]
    epoch_times = [e["epoch_time_s"] for e in epochs if e["event"] == "eval"]
    return {"wall_s": wall, "epoch_s": epoch_times, "tok_s_real": res["train_tokens_per_s"],
            "tok_s_padded": res["train_tokens_per_s_with_padding"], "peak_rss": rss.peak,
            "dev_f1": res["dev"]["default"]["f1"], "test_f1": res["test"]["default"]["f1"],
            "corpus": corpus, "model_dir": out_dir}


def run_reference(args, corpus) -> dict:
    """The run_ner_no_trainer.py way, written out."""
    from torch.utils.data import DataLoader
    from transformers import DataCollatorForTokenClassification, get_scheduler

    torch.manual_seed(args.seed)
    tok = load_tokenizer(args.encoder)
    labels = corpus.labels
    l2i = {l: i for i, l in enumerate(labels)}
    model = load_token_classifier(args.encoder, labels)

    def encode(sents):
        rows = []
        enc = tok([s.tokens for s in sents], is_split_into_words=True, truncation=True,
                  max_length=args.max_length)
        for i, s in enumerate(sents):
            tags = convert(s.tags, corpus.scheme, "iob2")
            prev, lab = None, []
            for w in enc.word_ids(i):
                lab.append(-100 if w is None or w == prev else l2i[tags[w]])
                prev = w
            rows.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                         "labels": lab})
        return rows

    train_rows = encode(corpus.splits["train"])
    collate = DataCollatorForTokenClassification(tok)
    g = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(train_rows, batch_size=args.batch_size, shuffle=True, collate_fn=collate,
                        generator=g)
    no_decay = ["bias", "LayerNorm.weight"]
    groups = [{"params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)],
               "weight_decay": 0.0},
              {"params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)],
               "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=args.lr)
    steps = math.ceil(len(loader) * args.epochs)
    sched = get_scheduler("linear", optimizer=opt, num_warmup_steps=0, num_training_steps=steps)
    epoch_times, real, padded, train_time = [], 0, 0, 0.0
    with PeakRSS() as rss:
        for epoch in range(math.ceil(args.epochs)):
            model.train()
            t0 = time.perf_counter()
            for batch in loader:
                out = model(**batch)
                out.loss.backward()
                opt.step()
                sched.step()
                opt.zero_grad()
                real += int(batch["attention_mask"].sum())
                padded += batch["attention_mask"].numel()
            epoch_times.append(time.perf_counter() - t0)
            train_time += epoch_times[-1]

        @torch.inference_mode()
        def score(split):
            model.eval()
            sents = corpus.splits[split]
            rows = encode(sents)
            gold, pred = [], []
            for b in range(0, len(rows), 64):
                batch = collate([{k: r[k] for k in ("input_ids", "attention_mask", "labels")}
                                 for r in rows[b: b + 64]])
                ids = model(input_ids=batch["input_ids"],
                            attention_mask=batch["attention_mask"]).logits.argmax(-1)
                for p_row, l_row in zip(ids.tolist(), batch["labels"].tolist()):
                    keep = [(p, l) for p, l in zip(p_row, l_row) if l != -100]
                    gold.append([labels[l] for _, l in keep])
                    pred.append([labels[p] for p, _ in keep])
            return entity_scores(gold, pred)["f1"]

        dev_f1, test_f1 = score("dev"), score("test")
    return {"epoch_s": epoch_times, "tok_s_real": real / train_time, "tok_s_padded": padded / train_time,
            "padding_share": 1 - real / padded, "peak_rss": rss.peak, "dev_f1": dev_f1,
            "test_f1": test_f1}


def predict_speed(model_dir: Path, corpus, repeats: int) -> dict:
    """Sentences/s of seqlab's prediction (fp32, and bf16 autocast) and of the pipeline, timed
    in turn on the same text, with the test F1 of seqlab's predictions in both precisions."""
    from transformers import pipeline

    sents = corpus.splits["test"]
    tok = load_tokenizer(str(model_dir))
    model = load_token_classifier(str(model_dir))
    meta = json.loads((model_dir / "seqlab.json").read_text())
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
            preds = predict_words(model, tok, [w for w, _ in split], max_length=meta["max_length"],
                                  overlap=meta["window_overlap"], batch_size=64, progress=False,
                                  dtype=dtype)
            for text, (words, offsets), pred in zip(texts, split, preds):
                decode_entities(words, pred, meta["labels"], meta["train_scheme"], offsets, text)
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
    p.add_argument("--predict-repeats", type=int, default=3)
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--output", help="write the figures as JSON here")
    p.add_argument("--predict-only", metavar="MODEL_DIR",
                   help="skip both trainings: time prediction of this trained model directory")
    args = p.parse_args(argv)
    if args.predict_only:
        return predict_only(args)
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_seqlab(args, Path(tmp) / "seqlab")
        ref = None if args.skip_reference else run_reference(args, ours["corpus"])
        speed = predict_speed(ours["model_dir"], ours["corpus"], args.predict_repeats)
    mib = 2 ** 20
    rows = [("wall time per epoch (s)", ", ".join(f"{t:.0f}" for t in ours["epoch_s"]),
             ", ".join(f"{t:.0f}" for t in ref["epoch_s"]) if ref else "-"),
            ("train tokens/s, real tokens", f"{ours['tok_s_real']:.0f}", f"{ref['tok_s_real']:.0f}" if ref else "-"),
            ("train tokens/s, with padding", f"{ours['tok_s_padded']:.0f}", f"{ref['tok_s_padded']:.0f}" if ref else "-"),
            ("peak RSS (MiB)", f"{ours['peak_rss'] / mib:.0f}", f"{ref['peak_rss'] / mib:.0f}" if ref else "-"),
            ("dev entity F1 (seqeval default)", f"{100 * ours['dev_f1']:.2f}", f"{100 * ref['dev_f1']:.2f}" if ref else "-"),
            ("test entity F1 (seqeval default)", f"{100 * ours['test_f1']:.2f}", f"{100 * ref['test_f1']:.2f}" if ref else "-"),
            ("predict sentences/s (test set)", f"{speed['seqlab']:.0f}", f"{speed['pipeline']:.0f} (pipeline)"),
            ("predict sentences/s, bf16 autocast (`--bf16`)", f"{speed['seqlab bf16']:.0f}", "-"),
            ("test entity F1 of `predict` output, fp32 / bf16",
             " / ".join(f"{100 * speed['f1'][k]:.2f}" for k in speed["f1"]), "-")]
    print(f"\nCoNLL-2003, {args.encoder}, epochs {args.epochs}, batch {args.batch_size}, max_length "
          f"{args.max_length}, lr {args.lr}, seed {args.seed}, train limit {args.limit}, "
          f"eval limit {args.eval_limit}, torch threads {torch.get_num_threads()}")
    print("| | seqlab | reference |\n|---|---:|---:|")
    for name, a, b in rows:
        print(f"| {name} | {a} | {b} |")
    if ref:
        print(f"real tokens/s ratio seqlab / reference: {ours['tok_s_real'] / ref['tok_s_real']:.2f}; "
              f"reference padding share {100 * ref['padding_share']:.0f}%")
    print(f"predict ratio seqlab / pipeline: {speed['seqlab'] / speed['pipeline']:.2f} "
          f"(bf16 autocast: {speed['seqlab bf16'] / speed['pipeline']:.2f})")
    if args.output:
        Path(args.output).write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
