"""Entity scores against seqeval and hand counts; SQuAD and CMRC2018 EM/F1 on hand-made cases."""

from __future__ import annotations

import random

import pytest

from seqlab.metrics import cmrc_em_f1, entity_scores, normalize_answer, squad_em_f1


def test_i_after_o_counts_in_default_mode_not_in_strict():
    gold = [["O", "B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["O", "I-PER", "I-PER", "O", "B-LOC"]]
    default = entity_scores(gold, pred, mode="default")
    strict = entity_scores(gold, pred, mode="strict")
    assert default["f1"] == 1.0  # conlleval reads I-PER after O as the start of PER
    assert strict["precision"] == 1.0 and strict["recall"] == 0.5  # ill-formed PER is dropped
    assert strict["per_type"]["PER"]["recall"] == 0.0


def test_hand_counted_scores():
    gold = [["B-PER", "I-PER", "O", "B-ORG"], ["B-LOC", "O"]]
    pred = [["B-PER", "O", "O", "B-ORG"], ["B-LOC", "B-LOC"]]
    s = entity_scores(gold, pred)
    # gold 3 entities; pred 4; right: ORG, LOC -> P 2/4, R 2/3
    assert s["precision"] == pytest.approx(0.5)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert s["per_type"]["PER"]["support"] == 1


def test_random_sequences_agree_with_seqeval():
    from seqeval.metrics import f1_score, precision_score, recall_score

    rng = random.Random(0)
    pool = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]
    gold = [[rng.choice(pool) for _ in range(rng.randint(1, 15))] for _ in range(500)]
    pred = [[t if rng.random() < 0.7 else rng.choice(pool) for t in g] for g in gold]
    s = entity_scores(gold, pred)
    assert s["f1"] == pytest.approx(f1_score(gold, pred))
    assert s["precision"] == pytest.approx(precision_score(gold, pred))
    assert s["recall"] == pytest.approx(recall_score(gold, pred))


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="sequence 0: 2 gold tags but 1 predicted"):
        entity_scores([["O", "O"]], [["O"]])


def test_squad_normalisation_and_max_over_references():
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert squad_em_f1("the Broncos", ["Denver Broncos", "Broncos"]) == (1.0, 1.0)
    em, f1 = squad_em_f1("Denver", ["Denver Broncos"])
    assert em == 0.0 and f1 == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert squad_em_f1("a an the", ["the"]) == (1.0, 0.0)  # both normalise to "": v1.1 F1 is 0
    assert squad_em_f1("cat", ["dog"]) == (0.0, 0.0)
    # repeated tokens count with multiplicity
    em, f1 = squad_em_f1("red red car", ["red car"])
    assert f1 == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))


def test_squad_references_must_be_a_list():
    with pytest.raises(ValueError, match="list of answer strings"):
        squad_em_f1("x", "x")


def test_cmrc_character_level():
    assert cmrc_em_f1("北京大学", ["北京大学。"]) == (1.0, 1.0)
    em, f1 = cmrc_em_f1("北京", ["北京大学"])
    assert em == 0.0 and f1 == pytest.approx(2 * 1 * 0.5 / 1.5)
    em, f1 = cmrc_em_f1("1998年", ["1998年", "九八年"])
    assert (em, f1) == (1.0, 1.0)
    # English runs inside Chinese are tokens, not characters
    em, f1 = cmrc_em_f1("NBA球员", ["NBA"])  # tokens nba, 球, 员: P 1/3, R 1
    assert em == 0.0 and f1 == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))


def test_cmrc_segments_runs_as_nltk_word_tokenize_does():
    from seqlab.metrics import _cmrc_segment

    # the official script's nltk.word_tokenize keeps a decimal number whole
    assert _cmrc_segment("364.6公里") == ["364.6", "公", "里"]
    assert _cmrc_segment("NBA球员") == ["nba", "球", "员"]
    assert cmrc_em_f1("364.6公里", ["364.6公里"]) == (1.0, 1.0)
    em, f1 = cmrc_em_f1("364公里", ["364.6公里"])  # tokens 364/公/里 against 364.6/公/里
    assert em == 0.0 and f1 == pytest.approx(2 / 3)
