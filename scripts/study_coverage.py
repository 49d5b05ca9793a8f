"""How often the study's two-level bootstrap covers a true difference of 0, by the number of
paired seeds and by how much the seed moves F1, on synthetic grids with a known null.

    python scripts/study_coverage.py                # 200 grids a cell, 500 resamples each
    python scripts/study_coverage.py --grids 400

Each synthetic grid: 300 test sentences of 1-3 gold entities each, a difficulty shared by both
systems, and two systems of the same expected recall (the null) whose recall moves with the
seed by a normal draw of standard deviation ``seed sd`` (in F1 points, roughly). For each cell
it prints the share of grids whose 95% interval holds 0 (nominal: 0.95), the share whose
bootstrap p is below 0.05 (nominal: 0.05), and the share the study's verdict rule calls better
or worse (the bootstrap p and the paired t-test over seeds both below 0.05; at most 0.05). Where
the sentences dominate, few seeds are enough; where the seed dominates, the bootstrap's seed
level, drawn from 2-5 seeds, is too narrow (the percentile bootstrap of a mean of n draws has no
small-sample correction), which is why the verdict asks the t-test too.
"""

from __future__ import annotations

import argparse

import numpy as np
from tqdm.auto import tqdm

from seqlab.study import stats
from seqlab.tasks.ner import NerTask

entity_f1 = NerTask.study_scores()["f1"]  # the study's own score of summed counts


def null_grid(rng: np.random.Generator, seeds: int, sentences: int, seed_sd: float):
    """Two systems' (seeds, sentences, 3) counts with no difference in expectation."""
    gold = rng.integers(1, 4, sentences)
    hard = rng.random(sentences)
    systems = []
    for _ in range(2):
        per_seed = []
        for _ in range(seeds):
            recall = np.clip(0.7 + rng.normal(0, seed_sd) - 0.3 * hard, 0, 1)
            per_seed.append(np.stack([rng.binomial(gold, recall), gold, gold], 1))
        systems.append(np.stack(per_seed))
    return systems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grids", type=int, default=200, help="synthetic grids a cell")
    ap.add_argument("--resamples", type=int, default=500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 5])
    ap.add_argument("--seed-sd", type=float, nargs="+", default=[0.005, 0.02, 0.05, 0.10],
                    help="the seed's standard deviation of recall (0.02: about 2 F1 points)")
    ap.add_argument("--random-seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.random_seed)
    rows = []
    cells = [(sd, n) for sd in args.seed_sd for n in args.seeds]
    for sd, n in tqdm(cells, desc="cells"):
        covered = rejected = called = 0
        for _ in range(args.grids):
            a, b = null_grid(rng, n, 300, sd)
            out = stats.two_level_bootstrap(a, b, entity_f1, resamples=args.resamples,
                                            seed=int(rng.integers(1 << 30)))
            seed_p = stats.paired_tests(entity_f1(a.sum(1)), entity_f1(b.sum(1)))["t_test_p"]
            covered += out["ci_low"] <= 0 <= out["ci_high"]
            rejected += out["p_value"] < 0.05
            called += stats.verdict(out, out["p_value"], 1.0, seed_p=seed_p, seed_tost=1.0,
                                    seeds=n) in ("better", "worse")
        rows.append((sd, n, covered / args.grids, rejected / args.grids, called / args.grids))
    print(f"{args.grids} null grids a cell, {args.resamples} resamples each")
    print("| seed sd of recall | paired seeds | 95% interval holds 0 | bootstrap p < 0.05 "
          "| verdict better or worse |")
    print("|---:|---:|---:|---:|---:|")
    for sd, n, cov, rej, call in rows:
        print(f"| {sd:.3f} | {n} | {cov:.2f} | {rej:.2f} | {call:.2f} |")


if __name__ == "__main__":
    main()
