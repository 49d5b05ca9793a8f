"""The NER heads side by side on one budget (``make bench-heads``).

    python scripts/bench_heads.py                          # full CoNLL-2003, 3 epochs, one seed
    python scripts/bench_heads.py --limit 2000 --epochs 1  # a shorter side-by-side
    python scripts/bench_heads.py --span-only              # the span head's cost per batch only
    python scripts/bench_heads.py --crf-only               # our CRF against pytorch-crf

Each head trains in a process of its own (``seqlab train configs/conll2003.yaml`` with the head
changed, so the same encoder, data, batch, learning rate and seed), one after the other; its
peak RSS is the kernel's figure for that process. Rows: softmax decoded by argmax and by
constrained Viterbi (one run, both decodings scored), CRF, GlobalPointer and Efficient
GlobalPointer with the multilabel categorical cross-entropy. For each: dev and test F1 (seqeval
default, or exact-match spans, equal to it on flat data), training real tokens/s, peak RSS,
and prediction sentences/s on the test sentences (text in, entities out, as ``seqlab predict``;
median of ``--predict-repeats``).

Then the span head's cost per batch: forward and backward of the scorer and the loss alone,
on encoder states of 16 windows of 128 and of 512 words (types 4, head size 64), timed (median
of repeats) and with the bytes of the tensors that grow with types x n^2 (scores, labels,
their gradients).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HEADS = {  # name: (overrides, the decoding of the row)
    "softmax (argmax)": (["model.head=softmax", "loss.name=ce"], "argmax"),
    "softmax (viterbi)": (["model.head=softmax", "loss.name=ce"], "viterbi"),
    "crf": (["model.head=crf", "loss.name=crf"], None),
    "global_pointer": (["model.head=global_pointer", "loss.name=multilabel_ce",
                        "model.efficient=false"], None),
    "efficient global_pointer": (["model.head=global_pointer", "loss.name=multilabel_ce",
                                  "model.efficient=true"], None),
}


def train_head(name: str, overrides: list[str], args, work: Path) -> dict:
    out = work / name.split()[0].replace("(", "")
    if "efficient" in name:
        out = work / "efficient_global_pointer"
    metrics = out / "metrics.json"
    if not metrics.is_file():
        cmd = [sys.executable, "-m", "seqlab.cli", "train", str(ROOT / "configs" / "conll2003.yaml"),
               *overrides, f"train.epochs={args.epochs}", f"train.output_dir={out}",
               "train.overwrite=true", "--no-progress"]
        if args.limit:
            cmd.append(f"data.limit={args.limit}")
        if args.eval_limit:
            cmd.append(f"data.eval_limit={args.eval_limit}")
        print(f"--- {name}: {' '.join(cmd[3:])}", flush=True)
        proc = subprocess.Popen(cmd, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"bench_heads: training {name} failed")
        (out / "peak_rss.json").write_text(json.dumps({"peak_rss": usage.ru_maxrss * 1024}))
    return {"dir": out, **json.loads(metrics.read_text()),
            **json.loads((out / "peak_rss.json").read_text())}


def scores(m: dict, split: str, decoding: str | None) -> float:
    r = m[split]
    if "exact" in r:
        return r["exact"]["f1"]
    if decoding and decoding != r.get("decode"):
        return r["decodings"][decoding]["default"]["f1"]
    return r["default"]["f1"]


def predict_speed(run: Path, decoding: str | None, repeats: int, data_dir: str | None) -> float:
    """Test sentences/s of `seqlab predict`'s path: words split from the text, predicted,
    decoded to entities with character offsets."""
    from seqlab.assemble import load_config
    from seqlab.data.alignment import split_words
    from seqlab.data.registry import load_named
    from seqlab.export import _load_torch_model
    from seqlab.heads import get_head
    from seqlab.models import load_tokenizer
    from seqlab.tasks.ner_inference import entity_records, predict_sentences

    meta = json.loads((run / "seqlab.json").read_text())
    cfg = load_config(run / "config.yaml")
    if decoding:
        cfg.eval.decode = decoding
    head = get_head(meta["head"])(cfg, meta["labels"])
    model = _load_torch_model(run, meta).eval()
    tok = load_tokenizer(str(run))
    splits, _ = load_named("conll2003", data_dir)
    texts = [" ".join(s.tokens) for s in splits["test"]]
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        split = [split_words(t) for t in texts]
        preds = predict_sentences(model, tok, head, [w for w, _ in split],
                                  max_length=meta["max_length"], overlap=meta["window_overlap"],
                                  batch_size=64, progress=False)
        for text, (_, offsets), pred in zip(texts, split, next(iter(preds.values()))):
            entity_records(pred.entities, offsets, text)
        rates.append(len(texts) / (time.perf_counter() - t0))
    return statistics.median(rates)


def span_cost(words: int, *, batch: int = 16, types: int = 4, size: int = 64, hidden: int = 384,
              repeats: int = 5) -> dict:
    """Forward and backward of the span scorer and its loss on random encoder states."""
    from seqlab.heads.global_pointer import rope
    from seqlab.losses import multilabel_ce

    out = {}
    for efficient in (False, True):
        torch.manual_seed(0)
        qk = torch.nn.Linear(hidden, 2 * size if efficient else types * 2 * size)
        terms = torch.nn.Linear(2 * size, 2 * types)
        h = torch.randn(batch, words, hidden, requires_grad=True)
        labels = torch.zeros(batch, types, words, words, dtype=torch.int8)
        labels[:, :, torch.tril_indices(words, words, -1)[0], torch.tril_indices(words, words, -1)[1]] = -100
        labels[:, :, 3, 5] = 1
        times = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            x = qk(h)
            if efficient:
                q, k = rope(x[..., ::2]), rope(x[..., 1::2])
                s = torch.einsum("bmd,bnd->bmn", q, k) / size ** 0.5
                tt = terms(x).transpose(1, 2) / 2
                logits = s.unsqueeze(1) + tt[:, 0::2, :, None] + tt[:, 1::2, None, :]
            else:
                x = x.view(batch, words, types, 2 * size)
                q, k = rope(x[..., :size]), rope(x[..., size:])
                logits = torch.einsum("bmtd,bntd->btmn", q, k) / size ** 0.5
            loss = multilabel_ce(logits.flatten(-2), labels.flatten(-2))
            loss.backward()
            times.append(time.perf_counter() - t0)
            h.grad = None
        cells = batch * types * words * words
        out["efficient" if efficient else "standard"] = {
            "ms": 1000 * statistics.median(times[1:]),
            # scores and their gradient in float32, labels in int8, the loss's masked copies
            "score_tensors_mib": (cells * (4 + 4 + 1) + 3 * cells * 4) / 2**20}
    return out


def train_speed(args, steps: int = 150, warmup: int = 10, repeats: int = 3) -> dict:
    """Real training tokens/s of each head on the same batches (the first length-grouped
    batches of CoNLL-2003 train, batch 16, max_length 128, fused AdamW), ``steps`` optimizer
    steps after ``warmup``, the heads interleaved, the median of ``repeats``: the same work on
    the same machine minutes apart, unlike the long runs' own figures."""
    from seqlab.assemble import config_from_dict
    from seqlab.tasks import get_task
    from seqlab.train import LengthGroupedBatchSampler, make_optimizer

    setups = {}
    for name, (overrides, _) in HEADS.items():
        if "viterbi" in name:
            continue  # the same training as argmax
        opts = dict(o.split("=", 1) for o in overrides)
        model_cfg = {"head": opts["model.head"]}
        if "model.efficient" in opts:
            model_cfg["efficient"] = opts["model.efficient"] == "true"
        cfg = config_from_dict({"task": "ner", "data": {"dataset": "conll2003",
                                                        "data_dir": args.data_dir},
                                "model": model_cfg, "loss": {"name": opts["loss.name"]},
                                "train": {"output_dir": "/tmp/unused"}})
        task = get_task("ner").from_config(cfg)
        rows = task.features("train")
        order = list(LengthGroupedBatchSampler(list(rows["length"]), 16, 42))[: steps + warmup]
        torch.manual_seed(42)
        model = task.new_model().train()
        setups[name.replace(" (argmax)", "")] = (task, model, make_optimizer(model, 0.01, 5e-5),
                                                 [task.collate([rows[i] for i in b]) for b in order])
    rates: dict[str, list[float]] = {n: [] for n in setups}
    for _ in range(repeats):
        for name, (task, model, opt, batches) in setups.items():
            tokens = 0
            for k, batch in enumerate(batches):
                if k == warmup:
                    t0, tokens = time.perf_counter(), 0
                task.compute_loss(model, batch).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                tokens += int(batch["attention_mask"].sum())
            rates[name].append(tokens / (time.perf_counter() - t0))
    return {n: statistics.median(v) for n, v in rates.items()}


def crf_compare(repeats: int = 20) -> dict:
    """Our vectorised CRF likelihood against pytorch-crf's (when installed), forward and
    backward, on a batch of emissions like CoNLL-2003's (16 windows, 40 words, 9 tags)."""
    from seqlab.heads._chain import crf_nll

    torch.manual_seed(0)
    e = torch.randn(16, 40, 9, requires_grad=True)
    tags = torch.randint(0, 9, (16, 40))
    mask = torch.ones(16, 40, dtype=torch.bool)
    trans, start, end = (torch.randn(9, 9, requires_grad=True), torch.randn(9, requires_grad=True),
                         torch.randn(9, requires_grad=True))

    def ours():
        crf_nll(e, tags, mask, trans, start, end).sum().backward()

    rows = {"seqlab": ours}
    try:
        from torchcrf import CRF

        crf = CRF(9, batch_first=True)
        rows["pytorch-crf"] = lambda: (-crf(e, tags, mask, reduction="sum")).backward()
    except ImportError:
        print("pytorch-crf is not installed (pip install pytorch-crf): our CRF alone")
    out = {}
    for name, fn in rows.items():
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = 1000 * statistics.median(times)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--limit", type=int)
    p.add_argument("--eval-limit", type=int)
    p.add_argument("--workdir", default=str(ROOT / "runs" / "bench-heads"))
    p.add_argument("--predict-repeats", type=int, default=3)
    p.add_argument("--data-dir", default=os.environ.get("SEQLAB_DATA"))
    p.add_argument("--span-only", action="store_true")
    p.add_argument("--crf-only", action="store_true")
    p.add_argument("--speed-only", action="store_true",
                   help="only the heads' training speed on the same batches")
    p.add_argument("--output", help="write the figures as JSON here")
    args = p.parse_args(argv)
    print(f"torch threads {torch.get_num_threads()}; CPU {_cpu()}")
    results: dict = {}
    if args.crf_only:
        results["crf"] = crf_compare()
        print("| CRF log-likelihood, forward + backward (16 x 40 x 9) | ms |\n|---|---:|")
        for name, ms in results["crf"].items():
            print(f"| {name} | {ms:.2f} |")
        return 0
    if args.speed_only or not args.span_only:
        results["train_speed"] = train_speed(args)
        base = results["train_speed"]["softmax"]
        print("\n| head | training real tokens/s, same 150 batches (median of 3) | x softmax |"
              "\n|---|---:|---:|")
        for name, rate in results["train_speed"].items():
            print(f"| {name} | {rate:.0f} | {rate / base:.2f} |")
        if args.speed_only:
            return 0
    if not args.span_only:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
        trained = {}
        rows = []
        for name, (overrides, decoding) in HEADS.items():
            key = tuple(overrides)
            if key not in trained:
                trained[key] = train_head(name, overrides, args, work)
            m = trained[key]
            rows.append({"head": name, "dev_f1": scores(m, "dev", decoding),
                         "test_f1": scores(m, "test", decoding),
                         "train_tokens_per_s": m["train_tokens_per_s"],
                         "train_time_s": m["train_time_s"], "peak_rss_mib": m["peak_rss"] / 2**20,
                         "predict_sentences_per_s": predict_speed(m["dir"], decoding,
                                                                  args.predict_repeats,
                                                                  args.data_dir)})
        results["heads"] = rows
        print("\n| head | dev F1 | test F1 | train tokens/s | train time (s) | peak RSS (MiB) | "
              "predict sentences/s |\n|---|---:|---:|---:|---:|---:|---:|")
        base = rows[0]
        for r in rows:
            print(f"| {r['head']} | {100 * r['dev_f1']:.2f} | {100 * r['test_f1']:.2f} | "
                  f"{r['train_tokens_per_s']:.0f} ({r['train_tokens_per_s'] / base['train_tokens_per_s']:.2f}x) | "
                  f"{r['train_time_s']:.0f} | {r['peak_rss_mib']:.0f} | "
                  f"{r['predict_sentences_per_s']:.0f} |")
    results["span_cost"] = {n: span_cost(n) for n in (128, 512)}
    print("\n| span scorer + loss, 16 windows x 4 types | words | forward + backward (ms) | "
          "score tensors (MiB) |\n|---|---:|---:|---:|")
    for n, per in results["span_cost"].items():
        for kind, r in per.items():
            print(f"| {kind} | {n} | {r['ms']:.1f} | {r['score_tensors_mib']:.0f} |")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
