"""Every file in configs/ loads and validates; overrides and bad keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqlab.assemble import load_config
from seqlab.errors import ConfigError
from seqlab.losses import build_loss

ALL_CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
CONFIGS = [p for p in ALL_CONFIGS if not p.stem.startswith("study-")]
STUDIES = [p for p in ALL_CONFIGS if p.stem.startswith("study-")]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads_and_validates(path, capsys):
    cfg = load_config(path)
    assert capsys.readouterr().err == ""  # no deprecated keys in what we ship
    build_loss(cfg.loss.name, **cfg.loss.options)
    assert cfg.train.learning_rate > 0 and isinstance(cfg.train.learning_rate, float)
    if cfg.task == "ner":
        from seqlab.data.registry import DATASETS
        assert cfg.data.dataset in DATASETS


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_study_config_loads_and_every_run_validates(path):
    from seqlab.assemble import config_from_dict
    from seqlab.study import load_study

    from seqlab.heads import get_head

    study = load_study(path)
    assert study.baseline in study.variants()
    # a grid that answers a question has 3 seeds or more; a pilot says it is one
    assert len(study.seeds) >= 3 or "pilot" in path.read_text().splitlines()[0]
    for run in study.runs():
        cfg = config_from_dict(run.config)
        get_head(cfg.model.head).make_loss(cfg.loss.name, cfg.loss.options)
        assert cfg.train.seed == run.seed and not cfg.train.save_model


def test_overrides_and_coercion(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: {learning_rate: 5e-5}\nloss: {name: focal, gamma: 2}\n")
    cfg = load_config(p, ["loss.gamma=1", "train.seed=7", "model.encoder=/x/y"])
    assert cfg.train.learning_rate == 5e-5 and isinstance(cfg.train.learning_rate, float)
    assert cfg.loss.options == {"gamma": 1.0} and cfg.train.seed == 7


@pytest.mark.parametrize("text, overrides, match", [
    ("train: {epoch: 3}\n", [], r"unknown config key train\.epoch; valid keys under train: epochs"),
    ("trian: {}\n", [], r"unknown config key trian; valid keys: task, data"),
    ("train: {}\n", ["train.batch_size=big"], r"train\.batch_size: expected an integer, got 'big'"),
    ("train: {}\n", ["train.learning_rate=fast"], r"train\.learning_rate: expected a number"),
    ("loss: {name: focal, gama: 2}\n", [], r"unknown config key loss\.gama for loss 'focal'"),
    ("loss: {name: focall}\n", [], r"loss\.name: unknown loss 'focall'; known losses"),
    ("loss: {name: focal, gamma: -1}\n", [], r"loss: gamma must be in \[0"),
    ("task: pos\n", [], r"task: expected one of ner, qa"),
    ("train: {}\n", ["train.seed"], r"expected dotted\.key=value"),
    ("data: {dataset: conll2033}\n", [],
     (r"c\.yaml: data\.dataset: unknown NER dataset 'conll2033'; known: bc5cdr, .*conll2003.* "
      r"\(or give data\.train_file/dev_file/test_file\)")),
    ("task: qa\ndata: {dataset: conll2003}\n", [],
     (r"data\.dataset: unknown QA dataset 'conll2003'; known: cmrc2018.* \(or give "
      r"data\.train_file/dev_file\)$")),
])
def test_bad_config(tmp_path, text, overrides, match):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p, overrides)


CONLL = Path(__file__).parents[1] / "configs" / "conll2003.yaml"
FOCAL = Path(__file__).parents[1] / "configs" / "conll2003-focal.yaml"


def test_switching_the_head_brings_its_loss(capsys):
    cfg = load_config(CONLL, ["model.head=crf"])  # the README's CoNLL config names loss ce
    assert cfg.model.head == "crf" and cfg.loss.name == "crf"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'ce' does not apply to the crf head" in err[0] and "'crf'" in err[0]
    cfg = load_config(CONLL, ["model.head=global_pointer"])
    assert cfg.loss.name == "multilabel_ce"
    assert "'ce' is not the default of the global_pointer head" in capsys.readouterr().err
    # binary ce on the span head is still there for who names it
    assert load_config(CONLL, ["model.head=global_pointer", "loss.name=ce"]).loss.name == "ce"
    # a loss named on the same command line that the head does not take stays an error
    with pytest.raises(ConfigError, match=r"loss.name: 'focal' does not apply to the crf head"):
        load_config(CONLL, ["model.head=crf", "loss.name=focal"])
    # a loss the file names that is not the default one is the user's choice: an error too
    with pytest.raises(ConfigError, match=r"'focal' does not apply to the crf head"):
        load_config(FOCAL, ["model.head=crf"])
    # a head that takes the file's loss keeps it, silently
    assert load_config(FOCAL, ["model.head=global_pointer"]).loss.name == "focal"
    assert capsys.readouterr().err == ""


def test_overriding_the_loss_name_replaces_the_losss_options():
    cfg = load_config(FOCAL, ["loss.name=ce"])
    assert cfg.loss.name == "ce" and cfg.loss.options == {}
    cfg = load_config(FOCAL, ["loss.name=soft_truncation", "loss.k=2"])
    assert cfg.loss.options == {"k": 2.0}
    assert load_config(FOCAL, ["loss.name=focal"]).loss.options["gamma"] == \
        load_config(FOCAL).loss.options["gamma"]  # the same name keeps the file's options


def test_allow_nested_is_auto_by_default_and_old_booleans_read_as_they_did():
    from seqlab.assemble import saved_config

    assert load_config(CONLL).eval.allow_nested == "auto"
    for value, want in (("true", "true"), ("false", "false"), ("auto", "auto")):
        assert load_config(CONLL, [f"eval.allow_nested={value}"]).eval.allow_nested == want
    with pytest.raises(ConfigError, match="eval.allow_nested: expected one of auto, true, false"):
        load_config(CONLL, ["eval.allow_nested=maybe"])
    old = {"task": "ner", "data": {"dataset": "conll2003"}, "eval": {"allow_nested": False}}
    assert saved_config(old)["eval"]["allow_nested"] == "auto"  # false was the old default
    assert saved_config(old)["data"]["tokens_column"] == "tokens"  # keys added since: defaults


def test_label_subwords_applies_to_the_softmax_head_in_iob2():
    assert load_config(CONLL, ["model.label_subwords=all"]).model.label_subwords == "all"
    with pytest.raises(ConfigError, match="the crf head labels each word's first subword only"):
        load_config(CONLL, ["model.head=crf", "model.label_subwords=all"])
    with pytest.raises(ConfigError, match="needs data.train_scheme: iob2"):
        load_config(CONLL, ["model.label_subwords=all", "data.train_scheme=bioes"])
