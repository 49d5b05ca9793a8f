"""The heads against direct computations: GlobalPointer's scores and RoPE, the multilabel
categorical cross-entropy, the CRF's likelihood and Viterbi against brute force, constrained
decoding; nested data end to end; every NER head through training, export and the Trainer."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import train_args
from seqlab.cli import main
from seqlab.errors import ConfigError, DataError
from seqlab.heads._chain import allowed_transitions, constrained, crf_nll, marginals, viterbi
from seqlab.heads.global_pointer import GlobalPointer, rope
from seqlab.losses import build_loss, multilabel_ce

ROOT = Path(__file__).parents[1]
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


# --------------------------------------------------------------------------- GlobalPointer


def _rotation(pos: int, d: int) -> torch.Tensor:
    """RoPE as a block-diagonal rotation matrix: pairs (2m, 2m+1) by pos * 10000^(-2m/d)."""
    r = torch.zeros(d, d, dtype=torch.float64)
    for m in range(d // 2):
        a = pos * 10000.0 ** (-2 * m / d)
        r[2 * m, 2 * m], r[2 * m, 2 * m + 1] = math.cos(a), -math.sin(a)
        r[2 * m + 1, 2 * m], r[2 * m + 1, 2 * m + 1] = math.sin(a), math.cos(a)
    return r


def _tiny_gp(tiny_encoder, efficient: bool, types: int = 3, size: int = 8):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_encoder, num_labels=types)
    config.seqlab_head_options = {"efficient": efficient, "head_size": size}
    torch.manual_seed(0)
    return GlobalPointer(config).double().eval()


@pytest.mark.parametrize("efficient", [False, True])
def test_global_pointer_scores_equal_a_double_loop(tiny_encoder, efficient):
    model = _tiny_gp(tiny_encoder, efficient)
    ids = torch.tensor([[2, 17, 40, 33, 9, 3]])
    with torch.no_grad():
        got = model(input_ids=ids).logits[0].detach()                      # (types, L, L)
        h = model.encoder(input_ids=ids).last_hidden_state[0]     # dropout off in eval
    d, L = model.size, ids.shape[1]
    with torch.no_grad():
        x = model.qk(h)                                           # (L, ...)
    for t in range(model.types):
        for i, j in itertools.product(range(L), range(L)):
            if efficient:
                q, k = x[i, ::2], x[j, 1::2]
                start = model.type_terms(x[i])[2 * t] / 2        # linear in [q_i; k_i]
                end = model.type_terms(x[j])[2 * t + 1] / 2      # linear in [q_j; k_j]
                want = (_rotation(i, d) @ q) @ (_rotation(j, d) @ k) / math.sqrt(d) + start + end
                want = want.detach()
            else:
                qk = x.view(L, model.types, 2 * d)
                q, k = qk[i, t, :d], qk[j, t, d:]
                want = (_rotation(i, d) @ q) @ (_rotation(j, d) @ k) / math.sqrt(d)
            assert float(got[t, i, j]) == pytest.approx(float(want), rel=1e-9, abs=1e-9)


def test_rope_makes_a_score_depend_on_the_offset_only():
    torch.manual_seed(1)
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    L = 12
    qs, ks = rope(q.expand(1, L, 8)), rope(k.expand(1, L, 8))     # the same vector everywhere
    scores = (qs[0] @ ks[0].T)                                     # (L, L)
    for i, j in itertools.product(range(L - 3), range(L - 3)):
        assert float(scores[i, j]) == pytest.approx(float(scores[i + 3, j + 3]), abs=1e-9)
    assert not torch.allclose(scores[0, 1], scores[0, 2])


# --------------------------------------------------------------------------- multilabel CE


def _naive_mlce(x, y):
    """log(1 + sum_neg e^s) + log(1 + sum_pos e^-s) per row, in float64 loops."""
    out = []
    for row, lab in zip(x.tolist(), y.tolist()):
        neg = sum(math.exp(s) for s, t in zip(row, lab) if t == 0)
        pos = sum(math.exp(-s) for s, t in zip(row, lab) if t == 1)
        out.append(math.log(1 + neg) + math.log(1 + pos))
    return torch.tensor(out, dtype=torch.float64)


def test_multilabel_ce_equals_the_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 9, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 2, (6, 9), generator=g)
    y[0] = 0           # a row with no positive
    y[1, :4] = -100    # ignored classes
    y[2] = -100        # a row entirely ignored: no item
    naive = _naive_mlce(x, y)
    assert multilabel_ce(x, y, reduction="none") == pytest.approx(naive.tolist())
    assert float(multilabel_ce(x, y)) == pytest.approx(float(naive.sum() / 5))
    assert float(multilabel_ce(x, y, num_items_in_batch=10)) == pytest.approx(float(naive.sum() / 10))
    assert int(build_loss("multilabel_ce").count_items(y)) == 5
    # the written example: log(1 + e^-0.5 + e^0.3) + log(1 + e^-1.5)
    row = torch.tensor([[1.5, -0.5, 0.3]], dtype=torch.float64)
    assert float(multilabel_ce(row, torch.tensor([[1, 0, 0]]))) == pytest.approx(
        math.log(1 + math.exp(-0.5) + math.exp(0.3)) + math.log(1 + math.exp(-1.5)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_multilabel_ce_stays_finite_in_half_precision(dtype):
    x = torch.tensor([[1e4, -1e4, 3.0, -2.0], [-1e4, 1e4, 0.0, 5.0]], dtype=dtype,
                     requires_grad=True)
    y = torch.tensor([[1, 0, -100, 0], [1, 0, 0, -100]])
    loss = multilabel_ce(x, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    # a confident right row costs nothing, a confident wrong one its margin
    per = multilabel_ce(x.detach().float(), y, reduction="none")
    assert float(per[0]) < 0.2 and float(per[1]) > 1e4 - 1


def test_multilabel_ce_compiles_as_one_graph():
    torch.compiler.reset()
    x = torch.randn(4, 7, requires_grad=True)
    y = torch.randint(0, 2, (4, 7))
    fn = build_loss("multilabel_ce")
    compiled = torch.compile(lambda z: fn(z, y), fullgraph=True, dynamic=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), fn(x, y))


# --------------------------------------------------------------------------- CRF


def _paths(n: int, c: int):
    return itertools.product(range(c), repeat=n)


def _score(e, path, trans, start, end):
    s = start[path[0]] + end[path[-1]] + sum(e[t, p] for t, p in enumerate(path))
    return s + sum(trans[a, b] for a, b in zip(path, path[1:]))


def _chain(seed: int, c: int = 5):
    g = torch.Generator().manual_seed(seed)
    trans = torch.randn(c, c, generator=g, dtype=torch.float64)
    start = torch.randn(c, generator=g, dtype=torch.float64)
    end = torch.randn(c, generator=g, dtype=torch.float64)
    return constrained(trans, start, end, allowed_transitions(LABELS, "iob2"))


@pytest.mark.parametrize("n", [1, 2, 4])
def test_crf_likelihood_viterbi_and_marginals_equal_brute_force(n):
    trans, start, end = _chain(n)
    g = torch.Generator().manual_seed(10 + n)
    e = torch.randn(2, 4, len(LABELS), generator=g, dtype=torch.float64)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[0, :n], mask[1, : max(1, n - 1)] = True, True
    tags = torch.randint(0, len(LABELS), (2, 4), generator=g)
    tags[:, :] = torch.tensor([0, 1, 2, 0])  # a valid IOB2 path
    nll = crf_nll(e, tags, mask, trans, start, end)
    best = viterbi(e, mask, trans, start, end)
    marg = marginals(e, mask, trans, start, end)
    for b in range(2):
        k = int(mask[b].sum())
        scores = {p: float(_score(e[b], p, trans, start, end)) for p in _paths(k, len(LABELS))}
        log_z = math.log(sum(math.exp(s) for s in scores.values()))
        gold = tuple(tags[b, :k].tolist())
        assert float(nll[b]) == pytest.approx(log_z - scores[gold], rel=1e-9)
        assert tuple(best[b, :k].tolist()) == max(scores, key=scores.get)
        for t in range(k):
            for c in range(len(LABELS)):
                want = sum(math.exp(s - log_z) for p, s in scores.items() if p[t] == c)
                assert float(marg[b, t, c]) == pytest.approx(want, abs=1e-9)


def _valid_iob2(tags: list[str]) -> bool:
    prev = "O"
    for t in tags:
        if t.startswith("I-") and prev[2:] != t[2:]:
            return False
        prev = t
    return True


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 7), st.integers(0, 10_000))
def test_constrained_decoding_never_emits_invalid_iob2(n, seed):
    from seqlab.heads.softmax import constrained_viterbi

    g = torch.Generator().manual_seed(seed)
    logp = [torch.randn(n, len(LABELS), generator=g).log_softmax(-1)]
    (ids, probs), = constrained_viterbi(logp, LABELS, "iob2")
    tags = [LABELS[i] for i in ids]
    assert _valid_iob2(tags)
    # and it is the best valid sequence
    best = max((p for p in _paths(n, len(LABELS)) if _valid_iob2([LABELS[i] for i in p])),
               key=lambda p: float(sum(logp[0][t, c] for t, c in enumerate(p))))
    assert tuple(ids) == best
    assert probs == pytest.approx([float(logp[0][t, c].exp()) for t, c in enumerate(ids)])


# --------------------------------------------------------------------------- nested data


def _nested_files(tmp_path: Path, fixtures: Path) -> tuple[Path, Path]:
    """The fixture sentences as span JSON lines, with an ORG nested around every LOC and a
    second type over each PER."""
    from seqlab.data.conll import read_conll
    from seqlab.data.schemes import tags_to_spans

    paths = []
    for name in ("train", "dev"):
        lines = []
        for s in read_conll(fixtures / f"{name}.conll"):
            ents = [{"start": a, "end": b, "type": t} for t, a, b in tags_to_spans(s.tags, "iob1")]
            for t, a, b in tags_to_spans(s.tags, "iob1"):
                if t == "PER":
                    ents.append({"start": a, "end": b, "type": "HUMAN"})
            lines.append(json.dumps({"tokens": s.tokens, "entities": ents}))
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(lines * (3 if name == "train" else 1)) + "\n")
        paths.append(path)
    return paths[0], paths[1]


@pytest.mark.parametrize("entity, match", [
    ('{"start": 0, "end": 9, "type": "ORG"}', r"entity 1 \[0, 9\) ORG lies outside the sentence of 3 words"),
    ('{"start": 2, "end": 2, "type": "ORG"}', r"entity 1 \[2, 2\) ORG is empty"),
    ('{"start": 0.5, "end": 2, "type": "ORG"}', r"entity 1: start must be an integer word index, got 0.5"),
    ('{"start": true, "end": 2, "type": "ORG"}', r"entity 1: start must be an integer word index, got true"),
    ('{"start": 0, "end": 2}', r'entity 1: expected \{"start": ..., "end": ..., "type": ...\}'),
    ('{"start": 0, "end": 2, "type": ""}', r"entity 1: type must be a non-empty string"),
])
def test_bad_spans_name_file_and_line(tmp_path, entity, match):
    from seqlab.data.conll import read_jsonl

    path = tmp_path / "bad.jsonl"
    path.write_text('{"tokens": ["a", "b"], "entities": []}\n'
                    f'{{"tokens": ["Bank", "of", "Paris"], "entities": [{entity}]}}\n')
    with pytest.raises(DataError, match=rf"bad\.jsonl:2: {match}"):
        read_jsonl(path)


def test_tagging_heads_refuse_nested_data_in_one_line(tmp_path, fixtures, tiny_encoder, capsys):
    train, dev = _nested_files(tmp_path, fixtures)
    for head, loss in (("softmax", "ce"), ("crf", "crf")):
        rc = main(train_args(tiny_encoder, tmp_path / head, "data.scheme=auto",
                             f"model.head={head}", f"loss.name={loss}", train=train, dev=dev,
                             test=None))
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert "train.jsonl:2: entities PER [0, 2) and HUMAN [0, 2) overlap" in err
        assert f"the {head} head" in err and "global_pointer" in err


@pytest.mark.slow
def test_nested_entities_round_trip_through_the_span_head(tmp_path, fixtures, tiny_encoder):
    train, dev = _nested_files(tmp_path, fixtures)
    out = tmp_path / "gp"
    assert main(train_args(tiny_encoder, out, "data.scheme=auto", "model.head=global_pointer",
                           train=train, dev=dev, test=dev, train__epochs=12,
                           train__batch_size=4, train__learning_rate=5e-3,
                           train__log_every=None)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["loss_history"][-1] < 0.5 * metrics["loss_history"][0]
    # with the defaults (eval.allow_nested: auto, the head's own loss) nested data predicts
    # nested entities, and the run records it for evaluate, predict, serve and export
    assert json.loads((out / "seqlab.json").read_text())["allow_nested"] is True
    assert "keeps nested entities" in (out / "README.md").read_text()
    # the scores are recomputed from the predictions file alone
    from seqlab.metrics import span_scores

    rows = [json.loads(l) for l in (out / "predictions_test.jsonl").read_text().splitlines()]
    gold = [[(e["type"], e["start"], e["end"]) for e in r["gold"]] for r in rows]
    pred = [[(e["type"], e["start"], e["end"]) for e in r["pred"]] for r in rows]
    assert span_scores(gold, pred) == metrics["test"]["exact"]
    assert any(len(g) > len({(a, b) for _, a, b in g}) for g in gold)  # nested gold is there
    assert metrics["test"]["exact"]["f1"] > 0.5
    nested_pred = [p for p in pred if len(p) > len({(a, b) for _, a, b in p})]
    assert nested_pred  # a word span predicted with two types
    # predict writes nested entities
    src = tmp_path / "in.txt"
    src.write_text("Peter Blackburn visited Germany .\n")
    res = tmp_path / "out.jsonl"
    assert main(["predict", str(out), str(src), "--output", str(res)]) == 0
    ents = json.loads(res.read_text())["entities"]
    assert all({"text", "type", "start", "end", "score"} <= set(e) for e in ents)


def test_span_scores_equal_seqeval_default_on_flat_data():
    import random

    from seqeval.metrics import classification_report

    from seqlab.data.schemes import tags_to_spans
    from seqlab.metrics import span_scores

    rng = random.Random(4)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in g] for g in gold]
    ours = span_scores([tags_to_spans(g) for g in gold], [tags_to_spans(p) for p in pred])
    ref = classification_report(gold, pred, output_dict=True, zero_division=0)
    assert ours["f1"] == pytest.approx(ref["micro avg"]["f1-score"])
    assert ours["precision"] == pytest.approx(ref["micro avg"]["precision"])
    for t, v in ours["per_type"].items():
        assert v["f1"] == pytest.approx(ref[t]["f1-score"])


def test_losses_that_do_not_fit_a_head_are_refused_at_config_time(tmp_path):
    from seqlab.assemble import load_config

    cases = [({"head": "crf"}, {"name": "focal"}, r"'focal' does not apply to the crf head; "
              r"losses for it: crf"),
             ({"head": "softmax"}, {"name": "multilabel_ce"}, r"does not apply to the softmax head"),
             ({"head": "global_pointer"}, {"name": "ce", "class_weight": "inverse"},
              r"the global_pointer head has no per-class weights"),
             ({"head": "global_pointer", "head_size": 7}, {"name": "ce"},
              r"model.head_size: expected an even number"),
             ({"head": "softmax", "max_span_words": 3}, {"name": "ce"},
              r"unknown config key model.max_span_words"),
             ({"head": "pointer"}, {"name": "ce"}, r"the pointer head is for task qa, not ner")]
    for model, loss, match in cases:
        path = tmp_path / "c.yaml"
        path.write_text(json.dumps({"task": "ner", "model": model, "loss": loss}))
        with pytest.raises(ConfigError, match=match):
            load_config(path)
    # the binary form of every token loss applies to span scores
    for name in ("ce", "focal", "hard_truncation", "soft_truncation", "dice", "multilabel_ce"):
        path.write_text(json.dumps({"task": "ner", "model": {"head": "global_pointer"},
                                    "loss": {"name": name}}))
        assert load_config(path).loss.name == name


# --------------------------------------------------------------------------- every head


HEADS = [("softmax", "ce", []), ("softmax", "ce", ["eval.decode=viterbi"]), ("crf", "crf", []),
         ("global_pointer", "multilabel_ce", []),
         ("global_pointer", "focal", ["model.efficient=true", "model.max_span_words=4"])]


@pytest.fixture(scope="module")
def head_runs(tmp_path_factory, fixtures, tiny_encoder):
    runs = {}
    for head, loss, extra in HEADS:
        out = tmp_path_factory.mktemp("heads") / f"{head}-{loss}"
        assert main(train_args(tiny_encoder, out, f"model.head={head}", f"loss.name={loss}",
                               *extra, train=fixtures / "train.conll",
                               dev=fixtures / "dev.conll", test=fixtures / "test.conll",
                               train__epochs=10, train__learning_rate=3e-3,
                               train__log_every=None)) == 0
        runs[(head, loss, tuple(extra))] = out
    return runs


@pytest.mark.slow
def test_every_head_trains_evaluates_and_predicts(head_runs, fixtures, tmp_path):
    for (head, _loss, _extra), run in head_runs.items():
        meta = json.loads((run / "seqlab.json").read_text())
        assert meta["head"] == head
        m = json.loads((run / "metrics.json").read_text())
        assert m["loss_history"][-1] < m["loss_history"][0], head
        out = tmp_path / f"{head}.out"
        assert main(["evaluate", str(run), "--file", str(fixtures / "test.conll"), "--output",
                     str(out), "--no-progress"]) == 0
        assert out.is_file()
    softmax = json.loads((head_runs[("softmax", "ce", ())] / "metrics.json").read_text())
    # both decodings are scored from one run; the configured one is written
    assert set(softmax["test"]["decodings"]) == {"argmax", "viterbi"}
    viterbi_run = head_runs[("softmax", "ce", ("eval.decode=viterbi",))]
    assert json.loads((viterbi_run / "metrics.json").read_text())["test"]["decode"] == "viterbi"
    assert (viterbi_run / "predictions_test.argmax.conll").is_file()
    # flat training data: the span head's predictions are made flat by default, and say so
    for (head, _loss, _extra), run in head_runs.items():
        if head != "global_pointer":
            continue
        assert json.loads((run / "seqlab.json").read_text())["allow_nested"] is False
        assert "predictions are made flat" in (run / "README.md").read_text()
        for line in (run / "predictions_test.jsonl").read_text().splitlines():
            spans = sorted((e["start"], e["end"]) for e in json.loads(line)["pred"])
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


@pytest.mark.slow
def test_every_head_exports_and_predicts_alike_under_onnxruntime(head_runs, tmp_path):
    pytest.importorskip("onnxruntime")
    src = tmp_path / "in.txt"
    src.write_text("Peter Blackburn visited Germany .\nEU rejects German call to boycott "
                   "British lamb .\n\nBonn\n")
    predicted = set()  # the heads whose comparison below compared entities, not nothing
    for key, run in head_runs.items():
        exported = tmp_path / f"{'-'.join(key[:2])}-{len(key[2])}-onnx"
        assert main(["export", str(run), "--output", str(exported), "--no-progress"]) == 0
        record = json.loads((exported / "export.json").read_text())
        assert record["max_abs_logit_diff_vs_torch"] <= 1e-4
        outs = []
        for model_dir, backend in ((run, "torch"), (exported, "onnxruntime")):
            out = tmp_path / f"{exported.name}-{backend}.jsonl"
            assert main(["predict", str(model_dir), str(src), "--output", str(out),
                         "--backend", backend]) == 0
            outs.append([json.loads(l) for l in out.read_text().splitlines()])
        if any(a["entities"] for a in outs[0]):
            predicted.add(key[0])
        for a, b in zip(*outs):
            assert [(e["type"], e["start"], e["end"]) for e in a["entities"]] == \
                [(e["type"], e["start"], e["end"]) for e in b["entities"]], key
            assert [e["score"] for e in a["entities"]] == pytest.approx(
                [e["score"] for e in b["entities"]], abs=1e-3)
    # every head predicted entities in one of its runs at least (a run that predicts nothing,
    # as the span head trained with binary focal loss on this budget, is compared by its logits)
    assert predicted == {key[0] for key in head_runs}, predicted


@pytest.mark.slow
@pytest.mark.parametrize("head, loss", [("crf", "crf"), ("global_pointer", "multilabel_ce"),
                                        ("global_pointer", "focal"), ("softmax", "focal")])
def test_every_head_trains_under_the_hf_trainer(head_runs, fixtures, tmp_path, head, loss):
    from transformers import PreTrainedModel, Trainer, TrainingArguments

    import seqlab.hf
    from seqlab.data.conll import read_conll
    from seqlab.data.schemes import convert, tags_to_spans
    from seqlab.models import load_tokenizer

    run = next(r for (h, _, _), r in head_runs.items() if h == head)
    model = seqlab.hf.load_model(str(run))
    assert isinstance(model, PreTrainedModel)
    # save_pretrained / from_pretrained round trip
    again_dir = tmp_path / "saved"
    model.save_pretrained(again_dir)
    again = type(model).from_pretrained(again_dir)
    ids = torch.tensor([[2, 17, 40, 33, 3]])
    model.eval(), again.eval()
    with torch.no_grad():
        for k, v in model(input_ids=ids).items():
            torch.testing.assert_close(again(input_ids=ids)[k], v)
    tok = load_tokenizer(str(run))
    sents = read_conll(fixtures / "train.conll")
    gold = [convert(s.tags, "iob1", "iob2") if seqlab.hf.head_of(model).target == "tags"
            else tags_to_spans(s.tags, "iob1") for s in sents]
    rows = seqlab.hf.features(model, tok, [s.tokens for s in sents], gold, max_length=24)
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=6,
                             per_device_train_batch_size=4, learning_rate=1e-3, report_to=[],
                             remove_unused_columns=False, logging_steps=1, save_strategy="no",
                             use_cpu=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model=model, args=args, train_dataset=rows,
                      data_collator=seqlab.hf.DataCollator(model, tok),
                      compute_loss_func=seqlab.hf.loss_function(loss))
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
