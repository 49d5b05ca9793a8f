"""How far `transformers.pipeline("token-classification")` on a seqlab run agrees with seqlab's own
prediction (`seqlab.load(RUN).predict`, = `seqlab predict`), and how each scores against gold.

The sentences of a split are joined by single spaces into texts; seqlab predicts their words
(so its words are the data's), the pipeline the texts, under each aggregation strategy. Entities
are compared as (type, character start, character end):

    python scripts/pipeline_agreement.py runs/conll2003-ce [runs/conll2003-ce-all-subwords ...]
        [--dataset conll2003] [--split test] [--limit N] [--output FILE.json]

For each run and strategy it prints the agreement (F1 of the pipeline's entities against
seqlab's), the share of sentences with the very same entities, and both F1s against gold.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STRATEGIES = ("simple", "first", "average", "max")


def f1(ref: list[set], got: list[set]) -> float:
    tp = sum(len(r & g) for r, g in zip(ref, got))
    n_ref, n_got = sum(map(len, ref)), sum(map(len, got))
    return 2 * tp / (n_ref + n_got) if n_ref + n_got else 1.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--dataset", default="conll2003")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--output", default=None)
    args = ap.parse_args()

    import seqlab
    from seqlab.data.alignment import running_text
    from seqlab.data.registry import load_named

    splits, spec = load_named(args.dataset)
    sents = splits[args.split][: args.limit]
    words = [s.tokens for s in sents]
    texts, starts = zip(*(running_text(w) for w in words))

    def chars(spans, st, ws):
        return {(t, st[a], st[b - 1] + len(ws[b - 1])) for t, a, b in spans}

    gold = [chars(s.gold_spans(spec.scheme), st, s.tokens) for s, st in zip(sents, starts)]
    results = []
    for run in args.runs:
        from transformers import pipeline

        t0 = time.perf_counter()
        ours = [{(e["type"], e["start"], e["end"]) for e in ents}
                for ents in seqlab.load(run).predict([list(w) for w in words])]
        ours_s = time.perf_counter() - t0
        row = {"run": run, "sentences": len(sents), "seqlab_f1_vs_gold": f1(gold, ours),
               "seqlab_seconds": round(ours_s, 1), "strategies": {}}
        for strategy in STRATEGIES:
            nlp = pipeline("token-classification", model=run, aggregation_strategy=strategy,
                           device=-1)
            t0 = time.perf_counter()
            out = nlp(list(texts), batch_size=64)
            theirs = [{(e["entity_group"], int(e["start"]), int(e["end"])) for e in ents}
                      for ents in out]
            row["strategies"][strategy] = {
                "agreement_f1": f1(ours, theirs),
                "same_sentences": sum(a == b for a, b in zip(ours, theirs)) / len(sents),
                "pipeline_f1_vs_gold": f1(gold, theirs),
                "seconds": round(time.perf_counter() - t0, 1)}
        results.append(row)
        print(f"{run}: seqlab predict F1 vs gold {100 * row['seqlab_f1_vs_gold']:.2f} "
              f"({len(sents)} {args.dataset} {args.split} sentences)")
        print(f"  {'strategy':<9} {'agree F1':>9} {'same sents':>11} {'pipeline F1':>12}")
        for strategy, r in row["strategies"].items():
            print(f"  {strategy:<9} {100 * r['agreement_f1']:>9.2f} "
                  f"{100 * r['same_sentences']:>10.2f}% {100 * r['pipeline_f1_vs_gold']:>12.2f}")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
