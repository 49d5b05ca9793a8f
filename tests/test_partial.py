"""Partial annotation (an unannotated word is not always `O`): the data marks, the partial CRF
likelihood against brute force, no gradient through a span masked as unknown, the softmax head's
masked words, evaluation data refused, and every head trained from it end to end."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from seqlab.assemble import config_from_dict
from seqlab.data.alignment import IGNORE
from seqlab.data.conll import read_conll, read_jsonl
from seqlab.errors import DataError
from seqlab.heads._chain import UNKNOWN, crf_nll

ROOT = Path(__file__).parents[1]


def _brute_force_nll(em, tags, trans, start, end):
    """log Z - log(sum over the paths consistent with the known tags), by enumeration."""
    L, C = em.shape

    def score(path):
        s = start[path[0]] + em[0, path[0]] + end[path[-1]]
        for t in range(1, L):
            s = s + trans[path[t - 1], path[t]] + em[t, path[t]]
        return s

    paths = list(itertools.product(range(C), repeat=L))
    every = torch.logsumexp(torch.stack([score(p) for p in paths]), 0)
    fits = [p for p in paths if all(k < 0 or p[i] == k for i, k in enumerate(tags))]
    return every - torch.logsumexp(torch.stack([score(p) for p in fits]), 0)


@pytest.mark.parametrize("seed", range(6))
def test_the_partial_crf_likelihood_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    C, L = 3, 5
    em = torch.randn(1, L, C, generator=g, dtype=torch.float64)
    trans, start, end = (torch.randn(*s, generator=g, dtype=torch.float64)
                         for s in ((C, C), (C,), (C,)))
    tags = torch.randint(0, C, (1, L), generator=g)
    tags[0, torch.randperm(L, generator=g)[: 1 + seed % 4]] = UNKNOWN
    mask = torch.ones(1, L, dtype=torch.bool)
    got = crf_nll(em, tags, mask, trans, start, end, partial=True)
    want = _brute_force_nll(em[0], tags[0].tolist(), trans, start, end)
    torch.testing.assert_close(got[0], want, rtol=1e-9, atol=1e-9)
    # every tag known: the ordinary likelihood; every tag unknown: nothing to learn
    known = torch.randint(0, C, (1, L), generator=g)
    torch.testing.assert_close(crf_nll(em, known, mask, trans, start, end, partial=True),
                               crf_nll(em, known, mask, trans, start, end))
    free = torch.full((1, L), UNKNOWN)
    assert crf_nll(em, free, mask, trans, start, end, partial=True).abs().item() < 1e-9


def test_a_span_masked_as_unknown_gets_no_gradient(tiny_encoder):
    from seqlab.heads import get_head
    from seqlab.losses import build_loss

    cfg = config_from_dict({"data": {"annotation": "partial"},
                            "model": {"head": "global_pointer", "encoder": str(tiny_encoder)}})
    head = get_head("global_pointer")(cfg, ["LOC", "PER"])
    # words: Peter(0) met(1) Anna(2) in(3) Oslo(4); known: Peter (PER), nothing else
    feature = {"input_ids": list(range(8)), "word_index": [-1, 0, 1, 2, 3, 4, -1, -1],
               "window": [0, 5]}
    targets = head.window_targets(feature, [(1, 0, 1)], 5)
    targets = head.mask_unknown(targets, feature, [True, False, False, False, False])
    batch = head.collate([{"input_ids": feature["input_ids"], **targets}], pad_id=0)
    from seqlab.heads.global_pointer import UNKNOWN_SPAN, resolve_unknown

    assert (batch["labels"][0][:, 3, 3] == UNKNOWN_SPAN).all()
    labels = resolve_unknown(batch["labels"])[0]      # (types, L, L) over subword positions
    assert labels[1, 1, 1] == 1                       # the gold span
    assert labels[0, 1, 1] == 0                       # a known word: a negative of the other type
    assert (labels[:, 3, 3] == IGNORE).all()          # "Anna": unknown, no negative
    assert (labels[:, 1, 3] == IGNORE).all()          # a span over an unknown word
    # negatives: all (no sampling) is what the head trains on
    cfg.loss.negatives = "all"
    assert torch.equal(head.training_labels(batch)[0], labels)
    logits = torch.randn(1, 2, 8, 8, requires_grad=True)
    loss = build_loss("multilabel_ce", binary=True)(logits.flatten(-2),
                                                    resolve_unknown(batch["labels"]).flatten(-2))
    loss.backward()
    grad = logits.grad[0]
    assert (grad[:, 3, 3] == 0).all() and (grad[:, 1, 3] == 0).all()
    assert grad[1, 1, 1] != 0 and grad[0, 1, 1] != 0


def _span_labels(words: list[int], types: int = 2, gold=((0, 0, 0),)) -> torch.Tensor:
    """Span labels ``(B, types, L, L)`` as the span head's collate makes them, one word a
    position: 0 at the candidates, 1 at ``gold`` (type, first, last), IGNORE elsewhere."""
    L = max(words)
    labels = torch.full((len(words), types, L, L), IGNORE, dtype=torch.int8)
    for b, n in enumerate(words):
        i, j = torch.triu_indices(n, n)
        labels[b, :, i, j] = 0
        for t, a, e in gold:
            labels[b, t, a, e] = 1
    return labels


@pytest.mark.parametrize("rate", [0.1, 0.7, 2.0])
def test_negative_sampling_draws_the_stated_fraction_under_a_seed(rate):
    from seqlab.heads.global_pointer import sample_negatives

    words = torch.tensor([3, 9, 20])
    labels = _span_labels(words.tolist())
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append(sample_negatives(labels, words, rate))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    out = draws[0]
    for b, n in enumerate(words.tolist()):
        negatives = n * (n + 1) // 2 - 1                  # candidates minus the gold span
        kept = (out[b] == 0).all(0).sum().item()
        assert kept == min(math.floor(rate * n) + 1, negatives)
        assert (out[b, 0, 0, 0] == 1) and (out[b, 1, 0, 0] == 0)  # positives and their other types stay
        # a span is kept or dropped for every type at once, and nothing else changes
        assert ((out[b] == IGNORE).all(0) | (out[b] != IGNORE).all(0)).all()
        assert ((out[b] == labels[b]) | (out[b] == IGNORE)).all()
    # pairs that are no candidates are never drawn in; spans over unknown words may be drawn
    # as negatives (a random span is rarely an entity), and any not drawn are out of the loss
    from seqlab.heads.global_pointer import UNKNOWN_SPAN

    partial = labels.clone()
    partial[:, :, 1, :] = torch.where(partial[:, :, 1, :] == 0, UNKNOWN_SPAN, partial[:, :, 1, :])
    partial[:, :, 2, 1] = IGNORE if partial.shape[-1] > 2 else partial[:, :, 2, 1]
    torch.manual_seed(0)
    out = sample_negatives(partial, words, rate)
    assert not (out == UNKNOWN_SPAN).any()
    assert ((out == 0).all(1).flatten(1).sum(1) == torch.minimum(
        torch.floor(rate * words).long() + 1, torch.tensor([5, 44, 209]))).all()
    assert (out[:, :, 2, 1] == IGNORE).all()


def test_weighted_negative_sampling_prefers_the_high_scoring_negatives():
    from seqlab.heads.global_pointer import sample_negatives

    words = torch.tensor([12])
    labels = _span_labels([12])
    scores = torch.full(labels.shape, -5.0)
    hard = [(1, 4), (2, 2), (7, 9)]                        # three negatives the model calls entities
    for i, j in hard:
        scores[0, 1, i, j] = 8.0
    hits = {h: 0 for h in hard}
    uniform_hits = 0
    torch.manual_seed(0)
    for _ in range(200):
        out = sample_negatives(labels, words, 0.1, scores=scores)   # 2 negatives of 77
        for h in hard:
            hits[h] += int((out[0, :, h[0], h[1]] == 0).all())
        uniform_hits += int((sample_negatives(labels, words, 0.1)[0, :, 1, 4] == 0).all())
    assert all(v > 100 for v in hits.values())            # near 2/3 of the draws each
    assert uniform_hits < 20                              # uniform: 2/77 of them
    # a high temperature flattens the draw back toward uniform
    torch.manual_seed(0)
    flat = sum(int((sample_negatives(labels, words, 0.1, scores=scores, temperature=1e4)
                    [0, :, 1, 4] == 0).all()) for _ in range(200))
    assert flat < 20


def test_loss_negatives_is_checked_and_defaults_to_the_rate_on_partial_data(tiny_encoder):
    from seqlab.config import NEGATIVE_RATE
    from seqlab.errors import ConfigError
    from seqlab.heads import get_head

    def head(data, loss):
        cfg = config_from_dict({"data": data, "loss": loss,
                                "model": {"head": "global_pointer", "encoder": str(tiny_encoder)}})
        return get_head("global_pointer")(cfg, ["LOC", "PER"])

    assert head({}, {}).negative_rate is None
    assert head({"annotation": "partial"}, {}).negative_rate == NEGATIVE_RATE
    assert head({"annotation": "partial"}, {"negatives": "all"}).negative_rate is None
    assert head({}, {"negatives": "0.35"}).negative_rate == 0.35
    cfg = config_from_dict({"model": {"head": "global_pointer"},
                            "loss": {"negatives": 0.5, "negative_sampling": "weighted"}})
    assert cfg.to_dict()["loss"] == {"name": "multilabel_ce", "negatives": 0.5,
                                     "negative_sampling": "weighted"}
    for loss, message in (({"negatives": -1}, "loss.negatives: expected all or a positive"),
                          ({"negatives": "some"}, "loss.negatives: expected all"),
                          ({"negative_sampling": "hard"}, "loss.negative_sampling: expected one"),
                          ({"negative_temperature": 0}, "loss.negative_temperature")):
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"model": {"head": "global_pointer"}, "loss": loss})
    with pytest.raises(ConfigError, match="the softmax head has no negative spans"):
        config_from_dict({"loss": {"negatives": 0.7}})


def test_the_span_heads_count_of_items_is_that_of_its_sampled_labels(tiny_encoder):
    from seqlab.heads import get_head

    for name in ("multilabel_ce", "focal"):
        cfg = config_from_dict({"model": {"head": "global_pointer", "encoder": str(tiny_encoder)},
                                "loss": {"name": name, "negatives": 0.3}})
        head = get_head("global_pointer")(cfg, ["LOC", "PER"])
        loss_fn = head.build_loss()
        assert head.loss_fn is loss_fn and loss_fn.binary
        batch = {"labels": _span_labels([4, 10]), "words": torch.tensor([4, 10])}
        torch.manual_seed(3)
        drawn = head.training_labels(batch, torch.randn(batch["labels"].shape))
        assert head.count_items(batch) == loss_fn.count_items(drawn.flatten(-2))
        assert head.count_items(batch) < loss_fn.count_items(batch["labels"].flatten(-2)) \
            or name == "multilabel_ce"


def test_the_softmax_head_leaves_unknown_words_out_and_the_crf_keeps_them_free():
    from seqlab.heads import get_head

    feature = {"input_ids": [0, 5, 6, 7, 1], "word_index": [-1, 0, 1, -1, -1], "window": [0, 2]}
    for name, unknown in (("softmax", IGNORE), ("crf", UNKNOWN)):
        cfg = config_from_dict({"model": {"head": name}})
        head = get_head(name)(cfg, ["O", "B-PER", "I-PER"])
        t = head.mask_unknown(head.window_targets(feature, [1, 0], 2), feature, [True, False])
        assert t["labels"] == [IGNORE, 1, unknown, IGNORE, IGNORE], name


def test_partial_data_is_marked_in_conll_and_json_lines(tmp_path):
    conll = tmp_path / "p.conll"
    conll.write_text("Peter B-PER\nmet ?\nAnna ?\n\nOslo B-LOC\n")
    first, second = read_conll(conll)
    assert first.tags == ["B-PER", "O", "O"] and first.known == [True, False, False]
    assert second.known is None
    bad = tmp_path / "bad.conll"
    bad.write_text("Peter X-PER\n")
    with pytest.raises(DataError, match=r"bad.conll:1: .*or '\?' for a word whose annotation"):
        read_conll(bad)
    jl = tmp_path / "p.jsonl"
    jl.write_text("\n".join(json.dumps(o) for o in [
        {"tokens": ["Peter", "met", "Anna"], "tags": ["B-PER", None, None]},
        {"tokens": ["Peter", "met", "Anna"], "tags": ["B-PER", "O", "O"], "partial": True},
        {"tokens": ["Bank", "of", "Oslo", "staff"], "entities": [{"start": 0, "end": 3,
                                                                  "type": "ORG"}],
         "known": [[3, 4]]},
        {"tokens": ["Oslo", "rain"], "entities": [{"start": 0, "end": 1, "type": "LOC"}],
         "partial": True}]) + "\n")
    a, b, c, d = read_jsonl(jl)
    assert a.known == b.known == [True, False, False] and a.tags == ["B-PER", "O", "O"]
    assert c.known == [True, True, True, True] and d.known == [True, False]


def test_annotation_partial_makes_unmarked_training_words_unknown_and_refuses_partial_eval(
        tmp_path, fixtures):
    from seqlab.tasks.ner_corpus import load_corpus

    cfg = config_from_dict({"data": {"train_file": str(fixtures / "train.conll"),
                                     "dev_file": str(fixtures / "dev.conll"),
                                     "annotation": "partial"}})
    corpus = load_corpus(cfg)
    s = corpus.splits["train"][0]
    assert s.known == [t != "O" for t in s.tags]  # IOB1/IOB2 tags: entity words known
    assert all(x.known is None for x in corpus.splits["dev"])
    dev = tmp_path / "dev.conll"
    dev.write_text("Peter B-PER\nmet ?\n")
    cfg = config_from_dict({"data": {"train_file": str(fixtures / "train.conll"),
                                     "dev_file": str(dev)}})
    with pytest.raises(DataError, match=r"dev.conll:2: the dev split has words whose annotation "
                                        r"is unknown; evaluation data must be completely"):
        load_corpus(cfg)


def _partial_train_file(tmp_path: Path, fixtures: Path) -> Path:
    """The fixture's training sentences with every other entity dropped to unknown words."""
    out, k = [], 0
    for s in read_conll(fixtures / "train.conll"):
        tags = list(s.tags)
        for i, t in enumerate(tags):
            if t != "O":
                k += 1
                if k % 3 == 0:
                    tags[i] = None
        out.append(json.dumps({"tokens": s.tokens, "tags": tags}))
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(out) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("head", ["softmax", "crf", "global_pointer"])
def test_every_head_trains_from_partial_data_through_the_cli(head, tmp_path, fixtures,
                                                              tiny_encoder):
    from conftest import train_args
    from seqlab.cli import main

    out = tmp_path / head
    assert main(train_args(tiny_encoder, out, "data.scheme=auto", "data.annotation=partial",
                           f"model.head={head}", train=_partial_train_file(tmp_path, fixtures),
                           dev=fixtures / "dev.conll", test=None,
                           # the span head learns slowly at first (README, "Heads")
                           train__epochs=12 if head == "global_pointer" else 4,
                           train__batch_size=4, train__learning_rate=5e-3,
                           train__log_every=None)) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert all(math.isfinite(x) for x in m["loss_history"])
    assert m["loss_history"][-1] < m["loss_history"][0]


def test_corrupt_regenerates_the_same_file_byte_for_byte(tmp_path, fixtures, capsys):
    from seqlab.cli import main

    outs = []
    for k, seed in enumerate((7, 7, 8)):
        out = tmp_path / f"c{k}.jsonl"
        assert main(["corrupt", "--file", str(fixtures / "train.conll"), "--p", "0.5",
                     "--seed", str(seed), "--output", str(out)]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[0] != outs[2]
    made = json.loads((tmp_path / "c0.jsonl.json").read_text())
    assert made["p"] == 0.5 and made["seed"] == 7 and 0 < made["removed"] < made["entities"]
    rows = [json.loads(l) for l in outs[0].decode().splitlines()]
    assert sum(len(r["entities"]) for r in rows) == made["entities"] - made["removed"]
    assert all(r["partial"] for r in rows)
    # read back: kept entities known, every other word unknown
    sents = read_jsonl(tmp_path / "c0.jsonl")
    assert all(s.known == [any(e["start"] <= w < e["end"] for e in r["entities"])
                           for w in range(len(s.tokens))] for s, r in zip(sents, rows))
    wrong = tmp_path / "wrong.jsonl"
    assert main(["corrupt", "--file", str(fixtures / "train.conll"), "--p", "0.5", "--seed",
                 "7", "--mode", "wrong", "--output", str(wrong)]) == 0
    assert all(s.known is None for s in read_jsonl(wrong))
    assert main(["corrupt", "--file", str(fixtures / "train.conll"), "--p", "1.5", "--output",
                 str(tmp_path / "x.jsonl")]) == 2
    assert "p must be in [0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("annotation", ["partial", "complete"])
def test_data_remove_entities_trains_on_what_seqlab_corrupt_writes(annotation, tmp_path, fixtures):
    """The grid's data option and the command draw the same entities: the training split of
    ``data.remove_entities`` equals the file ``seqlab corrupt`` writes, read back."""
    from seqlab.cli import main
    from seqlab.tasks.ner_corpus import load_corpus

    out = tmp_path / "c.jsonl"
    mode = "partial" if annotation == "partial" else "wrong"
    assert main(["corrupt", "--file", str(fixtures / "train.conll"), "--p", "0.5", "--seed",
                 "3", "--limit", "5", "--mode", mode, "--output", str(out)]) == 0
    cfg = config_from_dict({"data": {"train_file": str(fixtures / "train.conll"), "limit": 5,
                                     "remove_entities": 0.5, "remove_seed": 3,
                                     "annotation": annotation}})
    got = load_corpus(cfg).splits["train"]
    want = read_jsonl(out)
    assert len(got) == len(want) == 5
    for g, w in zip(got, want):
        assert g.tokens == w.tokens and g.gold_spans("iob2") == w.gold_spans("iob2")
        assert g.known == (w.known if annotation == "partial" else None)
    assert sum(len(g.gold_spans("iob2")) for g in got) < sum(
        len(s.gold_spans("iob1")) for s in read_conll(fixtures / "train.conll")[:5])
    with pytest.raises(Exception, match="data.remove_entities: expected a probability"):
        config_from_dict({"data": {"remove_entities": 1.5}})
