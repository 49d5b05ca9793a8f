"""Where a training step of `seqlab train` spends its time, phase by phase.

    python scripts/profile_train.py                       # CoNLL-2003, the make train settings
    python scripts/profile_train.py --steps 200 --limit 4000

Runs ``--steps`` optimizer steps of the embedded encoder on real length-grouped CoNLL-2003
batches (cross-entropy, batch 16, fused AdamW, gradient clipping at 1.0: the defaults) and times
each phase with the clock: forward with the loss, backward, gradient clipping, the optimizer
step. On a CPU every operation has finished when the call returns, so the phases add up to the
step; on a GPU the phases are synchronised for the measurement (which a real run does not do).
The first ``--warmup`` steps are not counted. Prints each phase's share of the step, the
real tokens/s, and the parameters the optimizer updates (the word embeddings among them: a
dense gradient for every row of the vocabulary, every step).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch.utils.data import DataLoader

from seqlab.assemble import config_from_dict
from seqlab.models import load_token_classifier, load_tokenizer
from seqlab.tasks.ner import NerTask
from seqlab.tasks.ner_corpus import load_corpus
from seqlab.train import LengthGroupedBatchSampler, make_optimizer

PHASES = ("forward + loss", "backward", "clip gradients", "optimizer step")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--limit", type=int, default=4000, help="first N training sentences")
    p.add_argument("--encoder", default="minilm-l6")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--data-dir", default=os.environ.get("SEQLAB_DATA"))
    args = p.parse_args(argv)
    cfg = config_from_dict({"task": "ner", "data": {"dataset": "conll2003", "data_dir": args.data_dir,
                                                    "limit": args.limit},
                            "model": {"encoder": args.encoder, "max_length": 128}})
    defaults = cfg.train
    corpus = load_corpus(cfg)
    tok = load_tokenizer(cfg.model.encoder)
    task = NerTask(cfg, tok, corpus)
    rows = task.features("train")
    sampler = LengthGroupedBatchSampler(list(rows["length"]), args.batch_size, defaults.seed)
    loader = DataLoader(rows, batch_sampler=sampler, collate_fn=task.collate)
    torch.manual_seed(defaults.seed)
    model = load_token_classifier(cfg.model.encoder, corpus.labels).train()
    optimizer = make_optimizer(model, defaults.weight_decay, defaults.learning_rate)
    params = [q for q in model.parameters() if q.requires_grad]
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    totals = dict.fromkeys(PHASES, 0.0)
    tokens, counted = 0, 0
    batches = iter(loader)
    for step in range(args.warmup + args.steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        marks = [time.perf_counter()]
        loss = task.compute_loss(model, batch, num_items_in_batch=task.count_items(batch).float())
        sync()
        marks.append(time.perf_counter())
        loss.backward()
        sync()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(params, defaults.max_grad_norm)
        sync()
        marks.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        marks.append(time.perf_counter())
        if step >= args.warmup:
            for name, a, b in zip(PHASES, marks, marks[1:]):
                totals[name] += b - a
            tokens += int(batch["attention_mask"].sum())
            counted += 1
    step_s = sum(totals.values())
    embed = model.get_input_embeddings().weight.numel()
    total = sum(q.numel() for q in params)
    print(f"{args.encoder}, CoNLL-2003 (first {args.limit} sentences), batch {args.batch_size}, "
          f"{counted} steps after {args.warmup}, torch threads {torch.get_num_threads()}")
    print("| phase | ms per step | share |\n|---|---:|---:|")
    for name in PHASES:
        print(f"| {name} | {1000 * totals[name] / counted:.1f} | {100 * totals[name] / step_s:.0f}% |")
    print(f"| whole step | {1000 * step_s / counted:.1f} | 100% |")
    print(f"real tokens per step {tokens / counted:.0f}; real tokens/s {tokens / step_s:.0f}")
    print(f"parameters updated every step: {total / 1e6:.1f}M, of which word embeddings "
          f"{embed / 1e6:.1f}M ({100 * embed / total:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
