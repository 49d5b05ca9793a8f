"""Where `seqlab predict` spends its time on a test set, and what batching by length saves.

    python scripts/profile_predict.py runs/conll2003-ce --dataset conll2003 --repeats 3

Prints, for the test split of a named dataset:
- positions the encoder runs over: seqlab's equal-length batches against the pipeline's
  batches of 64 in input order, padded to their longest row;
- sentences/s with equal-length batches against sorted batches of 64 padded to their longest
  (median of interleaved runs);
- the share of prediction time in the encoder forward and in its linear layers, and the linear
  layers' GFLOP/s next to a bare float32 matrix product of the same width.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqlab.data.alignment import (
    build_features,
    pad_batch,
    subwords_per_word,
    wrap_ids,
)
from seqlab.data.registry import load_named
from seqlab.models import load_token_classifier, load_tokenizer
from seqlab.tasks.ner_inference import predict_words


@torch.inference_mode()
def predict_padded(model, tok, sentences, max_length: int, overlap: int, batch_size: int) -> None:
    """The previous scheme, as a baseline: features sorted by length, batches of ``batch_size``
    padded to their longest row, with an attention mask."""
    feats = [f for w in subwords_per_word(tok, sentences)
             for f in build_features(w, None, max_length=max_length, overlap=overlap,
                                     wrap=wrap_ids(tok))]
    feats.sort(key=lambda f: len(f["input_ids"]))
    for b in range(0, len(feats), batch_size):
        batch = pad_batch(feats[b: b + batch_size], tok.pad_token_id)
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.softmax(-1)


class Timer:
    """Wall time spent inside the forward of the given modules (outermost calls only)."""

    def __init__(self, modules):
        self.total, self._depth, self._t0 = 0.0, 0, 0.0
        for m in modules:
            m.register_forward_pre_hook(self._pre)
            m.register_forward_hook(self._post)

    def _pre(self, *_):
        if self._depth == 0:
            self._t0 = time.perf_counter()
        self._depth += 1

    def _post(self, *_):
        self._depth -= 1
        if self._depth == 0:
            self.total += time.perf_counter() - self._t0


def matmul_gflops(width: int, hidden: int, rows: int = 8192, repeats: int = 10) -> float:
    """float32 GFLOP/s of ``x @ a @ b`` (a feed-forward block's two products)."""
    x, a, b = torch.randn(rows, width), torch.randn(hidden, width), torch.randn(width, hidden)

    def run():
        return torch.nn.functional.linear(torch.nn.functional.linear(x, a), b)

    run()
    t0 = time.perf_counter()
    for _ in range(repeats):
        run()
    return 4 * rows * width * hidden * repeats / (time.perf_counter() - t0) / 1e9


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("--dataset", default="conll2003")
    p.add_argument("--split", default="test")
    p.add_argument("--data-dir", default=os.environ.get("SEQLAB_DATA"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    splits, _ = load_named(args.dataset, args.data_dir)
    sents = [s.tokens for s in splits[args.split]]
    meta = json.loads((Path(args.model_dir) / "seqlab.json").read_text())
    tok = load_tokenizer(args.model_dir)
    model = load_token_classifier(args.model_dir).eval()
    length, overlap = meta["max_length"], meta["window_overlap"]

    ours = sum(len(f["input_ids"]) for w in subwords_per_word(tok, sents)
               for f in build_features(w, None, max_length=length, overlap=overlap,
                                       wrap=wrap_ids(tok)))
    lens = [len(ids) for ids in tok([" ".join(s) for s in sents], truncation=True,
                                    max_length=tok.model_max_length)["input_ids"]]
    theirs = sum(len(lens[i: i + 64]) * max(lens[i: i + 64]) for i in range(0, len(lens), 64))
    print(f"{args.dataset} {args.split}: {len(sents)} sentences; positions run by the encoder: "
          f"seqlab {ours}, pipeline (batches of 64 in input order) {theirs}, ratio {theirs / ours:.2f}")

    runs = {"equal-length batches (seqlab)": lambda: predict_words(
                model, tok, sents, max_length=length, overlap=overlap,
                batch_size=args.batch_size, progress=False),
            f"sorted, padded batches of {args.batch_size}": lambda: predict_padded(
                model, tok, sents, length, overlap, args.batch_size)}
    speed: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            speed[name].append(len(sents) / (time.perf_counter() - t0))
    for name, v in speed.items():
        print(f"{name}: {statistics.median(v):.0f} sentences/s (median of {args.repeats})")

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    forward, linear = Timer([model]), Timer(linears)
    t0 = time.perf_counter()
    runs["equal-length batches (seqlab)"]()
    total = time.perf_counter() - t0
    flops = 2 * ours * sum(m.in_features * m.out_features for m in linears)
    cfg = model.config
    print(f"prediction time: {total:.2f} s; encoder forward {100 * forward.total / total:.0f}%, its linear "
          f"layers {100 * linear.total / total:.0f}% at {flops / linear.total / 1e9:.0f} GFLOP/s; "
          f"a bare float32 matmul 8192 x {cfg.hidden_size} x {cfg.intermediate_size}: "
          f"{matmul_gflops(cfg.hidden_size, cfg.intermediate_size):.0f} GFLOP/s "
          f"(torch threads {torch.get_num_threads()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
