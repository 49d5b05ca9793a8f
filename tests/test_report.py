"""`seqlab report`: error categories against nervaluate, the page from a run directory alone,
and the model card."""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path

import pytest
import yaml

from seqlab.cli import main
from seqlab.data.schemes import tags_to_spans
from seqlab.error_analysis import categorise, count

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def _random_pairs(n: int, seed: int = 0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        gold = [rng.choice(TAGS) for _ in range(rng.randint(1, 10))]
        pred = [t if rng.random() < 0.6 else rng.choice(TAGS) for t in gold]
        out.append((gold, pred))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_error_categories_agree_with_nervaluate(seed):
    nervaluate = pytest.importorskip("nervaluate")
    pairs = _random_pairs(1000, seed)
    gold = [g for g, _ in pairs]
    pred = [p for _, p in pairs]
    ours = count([categorise(tags_to_spans(g), tags_to_spans(p)) for g, p in pairs])["overall"]
    ref = nervaluate.Evaluator(gold, pred, tags=["PER", "LOC", "ORG"], loader="list").evaluate()
    ref = ref["overall"] if isinstance(ref, dict) and "overall" in ref else ref[0]
    strict, exact = ref["strict"], ref["exact"]
    assert ours["exact"] == strict.correct
    assert ours["type"] + ours["boundary"] + ours["boundary+type"] == strict.incorrect
    assert ours["missed"] == strict.missed and ours["spurious"] == strict.spurious
    assert ours["exact"] + ours["type"] == exact.correct


def test_each_prediction_gets_one_category():
    gold = [("ORG", 0, 3), ("LOC", 2, 3), ("PER", 5, 6)]
    pred = [("ORG", 0, 3), ("LOC", 1, 3), ("MISC", 7, 8)]
    cats = [(e["category"], e["gold"], e["pred"]) for e in categorise(gold, pred)]
    assert cats == [("exact", ("ORG", 0, 3), ("ORG", 0, 3)),
                    ("boundary", ("LOC", 2, 3), ("LOC", 1, 3)),
                    ("spurious", None, ("MISC", 7, 8)),
                    ("missed", ("PER", 5, 6), None)]


def _brute_force_best(gold, pred):
    """The best one-to-one matching by enumeration: the most exact pairs, then the most
    overlapping pairs, then the most same-boundary pairs, then same-type pairs; its category
    counts."""
    import itertools
    from collections import Counter

    from seqlab.error_analysis import _overlap

    best, best_key = None, None
    slots = list(range(len(gold))) + [None] * len(pred)
    for perm in set(itertools.permutations(slots, len(pred))):
        if any(g is not None and _overlap(gold[g], p) == 0 for g, p in zip(perm, pred)):
            continue
        pairs = [(gold[g], p) for g, p in zip(perm, pred) if g is not None]
        key = (sum(g == p for g, p in pairs), len(pairs),
               sum(g[1:] == p[1:] for g, p in pairs), sum(g[0] == p[0] for g, p in pairs))
        if best_key is None or key > best_key:
            best_key, best = key, pairs
    cats = Counter(("exact" if g[0] == p[0] else "type") if g[1:] == p[1:] else
                   ("boundary" if g[0] == p[0] else "boundary+type") for g, p in best)
    cats["missed"] = len(gold) - len(best)
    cats["spurious"] = len(pred) - len(best)
    return cats


def _random_nested(rng, n_words=8):
    types = ["PER", "LOC", "SURNAME"]
    spans = set()
    for _ in range(rng.randint(0, 4)):
        a = rng.randrange(n_words)
        spans.add((rng.choice(types), a, rng.randint(a + 1, min(n_words, a + 4))))
    return sorted(spans, key=lambda x: (x[1], x[2], x[0]))


@pytest.mark.parametrize("seed", range(3))
def test_nested_error_categories_are_the_optimal_matching(seed):
    """On nested data a prediction may overlap several gold entities and several predictions
    one; the categories are those of the best one-to-one matching (against brute force), and
    exact per type is the strict true positives."""
    from collections import Counter

    rng = random.Random(seed)
    for _ in range(300):
        gold, pred = _random_nested(rng), _random_nested(rng)
        got = Counter(e["category"] for e in categorise(gold, pred))
        want = _brute_force_best(gold, pred)
        assert all(got[c] == want[c] for c in ("exact", "type", "boundary", "boundary+type",
                                                "missed", "spurious")), (gold, pred, got, want)
        per_type = count([categorise(gold, pred)])["per_type"]
        for t in {g[0] for g in gold} | {p[0] for p in pred}:
            assert per_type.get(t, {}).get("exact", 0) == len(set(gold) & set(pred) & {
                x for x in gold + pred if x[0] == t})


def nested_run(tmp_path: Path) -> tuple[Path, list[dict]]:
    """A finished span-head run written by hand: 60 sentences of random nested gold and
    predicted entities."""
    run = tmp_path / "nested"
    run.mkdir()
    (run / "seqlab.json").write_text(json.dumps({"task": "ner", "head": "global_pointer",
                                                 "labels": ["LOC", "PER", "SURNAME"],
                                                 "allow_nested": True}))
    (run / "config.yaml").write_text("task: ner\nmodel: {head: global_pointer}\n")
    rng = random.Random(5)
    rows = []
    for k in range(60):
        gold, pred = _random_nested(rng), _random_nested(rng)
        rows.append({"tokens": [f"w{k}_{i}" for i in range(8)],
                     "gold": [{"type": t, "start": a, "end": b} for t, a, b in gold],
                     "pred": [{"type": t, "start": a, "end": b, "score": 0.9}
                                   for t, a, b in pred]})
    with gzip.open(run / "predictions_test.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    (run / "metrics.json").write_text(json.dumps({"test": {"default": {"f1": 0.5}}}))
    return run, rows


def test_the_nested_report_counts_are_recomputed_from_its_predictions_file(tmp_path):
    """A span run's report: the error counts on the page equal a recomputation from
    predictions_test.jsonl.gz, and exact per type equals the strict true positives."""
    from seqlab.report import read_run, render

    run, rows = nested_run(tmp_path)
    page, summary = render(read_run(run, "test"))
    from collections import Counter

    want = Counter()
    tp = Counter()
    for r in rows:
        gold = [(e["type"], e["start"], e["end"]) for e in r["gold"]]
        pred = [(e["type"], e["start"], e["end"]) for e in r["pred"]]
        want.update(_brute_force_best(gold, pred))
        tp.update(t for t, *_ in set(gold) & set(pred))
    assert summary["categories"]["overall"] == {c: want[c] for c in summary["categories"]["overall"]}
    assert {t: v["exact"] for t, v in summary["categories"]["per_type"].items() if v["exact"]} == dict(tp)


def fake_ner_run(root: Path) -> Path:
    """A finished run directory written by hand: what the report reads, nothing else."""
    run = root / "fake-ner"
    run.mkdir(parents=True)
    (run / "seqlab.json").write_text(json.dumps({"task": "ner", "head": "softmax", "dataset":
                                                 "conll2003", "train_scheme": "iob2",
                                                 "labels": TAGS, "seqlab_version": "x"}))
    (run / "config.yaml").write_text("task: ner\nloss: {name: focal, gamma: 1.0}\n"
                                     "model: {encoder: minilm-l6}\n")
    sents = [(["Bank", "of", "Paris", "said"], ["B-ORG", "I-ORG", "I-ORG", "O"],
              ["B-ORG", "O", "B-LOC", "O"]),
             (["Peter", "met", "Anna"], ["B-PER", "O", "B-PER"], ["B-PER", "O", "O"]),
             (["<b>x</b>", "flew"], ["O", "O"], ["B-ORG", "O"]),
             (["EU", "rejects"], ["B-ORG", "O"], ["B-ORG", "O"])]
    lines = []
    for toks, gold, pred in sents:
        lines += [f"{t} {g} {p} 0.{7 + k % 3}" for k, (t, g, p) in enumerate(zip(toks, gold, pred))]
        lines.append("")
    with gzip.open(run / "predictions_test.conll.gz", "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    scores = {"precision": 0.4, "recall": 0.4, "f1": 0.4, "support": 5,
              "per_type": {"ORG": {"precision": 0.33, "recall": 0.5, "f1": 0.4, "support": 2},
                           "PER": {"precision": 1.0, "recall": 0.5, "f1": 0.67, "support": 2}}}
    (run / "metrics.json").write_text(json.dumps({"test": {"default": scores, "strict": scores},
                                                  "best_epoch": 2}))
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"event": "train", "epoch": 1, "step": 5, "loss": 1.2, "lr": 1e-4},
        {"event": "eval", "epoch": 1, "step": 5, "f1": 0.2},
        {"event": "train", "epoch": 2, "step": 10, "loss": 0.7, "lr": 5e-5},
        {"event": "eval", "epoch": 2, "step": 10, "f1": 0.4}]) + "\n")
    return run


def test_the_report_reads_the_run_directory_alone(tmp_path, capsys):
    run = fake_ner_run(tmp_path)
    assert main(["report", str(run)]) == 0
    page = (run / "report_test.html").read_text()
    assert capsys.readouterr().out.strip() == f"report written to {run / 'report_test.html'}"
    # self-contained: no address to fetch anything from
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<svg" in page and page.count("<svg") == 2  # the curves and the reliability diagram
    # the categories: ORG exact (EU); ORG->ORG boundary (Bank of Paris vs Bank); LOC spurious;
    # PER missed (Anna); ORG spurious on an O word
    assert "<td>boundary+type</td>" not in page
    for name in ("Scores on test", "Error categories", "Calibration", "Most frequent error patterns",
                 "Sentences with errors: 3 of 4"):
        assert name in page, name
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page  # words are escaped
    assert 'data-errors="missed:PER"' in page
    # another split that is not there: one line
    assert main(["report", str(run), "--split", "dev"]) == 2
    assert "no predictions of the dev split (predictions_test.conll.gz)" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2


def test_a_qa_report_highlights_answer_and_prediction(tmp_path):
    run = tmp_path / "qa"
    run.mkdir()
    (run / "seqlab.json").write_text(json.dumps({"task": "qa", "head": "tagging"}))
    (run / "metrics.json").write_text(json.dumps({"dev": {"f1": 0.5, "exact_match": 0.5}}))
    rows = [{"id": "1", "article": "A", "question": "Who came?", "context": "Anna came home.",
             "answers": ["Anna"], "prediction": "Anna", "start": 0, "end": 4, "score": 1.0,
             "exact_match": 1.0, "f1": 1.0},
            {"id": "2", "article": "A", "question": "Where to?", "context": "Anna came home.",
             "answers": ["home"], "prediction": "came", "start": 5, "end": 9, "score": 0.5,
             "exact_match": 0.0, "f1": 0.0}]
    (run / "predictions_dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["report", str(run)]) == 0  # QA runs show dev
    page = (run / "report_dev.html").read_text()
    assert "Questions missed (F1 below 100): 1 of 2" in page
    assert '<mark class="gold">home</mark>' in page and '<mark class="pred">came</mark>' in page


def test_the_model_card_holds_the_scores(tmp_path, fixtures, tiny_encoder):
    from seqlab.assemble import config_from_dict
    from seqlab.card import model_card

    cfg = config_from_dict({"task": "ner", "data": {"dataset": "conll2003"},
                            "loss": {"name": "focal", "gamma": 1.0}})
    metrics = {"best_epoch": 3, "train_time_s": 10, "train_tokens_per_s": 100,
               "test": {"default": {"f1": 0.8590, "precision": 0.85, "recall": 0.87}}}
    card = model_card(tmp_path / "conll2003-focal", cfg, {"task": "ner", "head": "softmax"}, metrics)
    front = yaml.safe_load(card.split("---")[1])
    (result,) = front["model-index"][0]["results"]
    assert result["dataset"] == {"name": "conll2003", "type": "conll2003", "split": "test"}
    assert result["metrics"][0] == {"type": "f1", "value": 85.9,
                                    "name": "entity F1 (seqeval default)"}
    assert front["library_name"] == "transformers" and "loss-focal" in front["tags"]
    assert 'pipeline("token-classification", model="conll2003-focal")' in card
