"""The shared base of heads that have no transformers Auto class (CRF, GlobalPointer): a
``PreTrainedModel`` holding any transformers encoder and the head's own layers.

``save_pretrained`` writes ``config.json`` (the encoder's config plus ``seqlab_head``, the labels
and the head's options) and ``model.safetensors``; ``from_pretrained`` on the class reads them
back, so the model round-trips like any transformers model and trains under the ``Trainer``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel


class EncoderWithHead(PreTrainedModel):
    """A transformers encoder (``self.encoder``) with a head; subclasses add the head's layers
    in ``__init__`` (after calling this one) and call :meth:`post_init`."""

    config_class = PretrainedConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True

    def __init__(self, config: PretrainedConfig, encoder: nn.Module | None = None):
        super().__init__(config)
        self.encoder = encoder if encoder is not None else AutoModel.from_config(config)
        if getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None  # unused: under DDP an unused parameter is an error
        self.dropout = nn.Dropout(getattr(config, "hidden_dropout_prob", 0.1))

    @classmethod
    def from_pretrained(cls, path, *args, **kwargs):
        """Load a saved model; the config is read as the encoder's own class."""
        kwargs.setdefault("config", AutoConfig.from_pretrained(path))
        return super().from_pretrained(path, *args, **kwargs)

    @classmethod
    def on_encoder(cls, encoder_dir: str, *, labels: list[str], head: str, options: dict):
        """A new model: the pretrained encoder in ``encoder_dir``, a freshly initialised head."""
        config = AutoConfig.from_pretrained(encoder_dir, num_labels=len(labels),
                                            id2label=dict(enumerate(labels)),
                                            label2id={l: i for i, l in enumerate(labels)})
        config.seqlab_head = head
        config.seqlab_head_options = dict(options)
        encoder = AutoModel.from_pretrained(encoder_dir, config=config)
        return cls(config, encoder=encoder)

    def _init_weights(self, module):
        """Fresh layers of the head are initialised as the encoder's are (normal with the
        config's ``initializer_range``, biases 0); loaded weights replace them."""
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(module, nn.Linear) and module is not getattr(self.encoder, "pooler", None):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def hidden(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return self.dropout(self.encoder(**kwargs).last_hidden_state)


def load_encoder_model(cls, directory: str | Path):
    """``cls.from_pretrained(directory)`` with transformers' loading notes kept quiet."""
    from ..models import quiet

    return quiet(cls.from_pretrained)(str(directory))
