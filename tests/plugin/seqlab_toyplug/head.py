"""A NER head: a two-layer perceptron over each position, decoded by argmax."""

from torch import nn

from seqlab.heads import register_head
from seqlab.heads._encoder import EncoderWithHead, load_encoder_model
from seqlab.heads.tokens import TokenHead


class MlpTagger(EncoderWithHead):
    """The encoder and a two-layer perceptron over each position."""

    def __init__(self, config, encoder=None):
        super().__init__(config, encoder)
        self.mlp = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.GELU(),
                                 nn.Linear(config.hidden_size, config.num_labels))
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_):
        from transformers.modeling_outputs import TokenClassifierOutput

        return TokenClassifierOutput(logits=self.mlp(self.hidden(input_ids, attention_mask)))


@register_head("toy_mlp")
class MlpHead(TokenHead):
    """The softmax head's decoding on a perceptron's scores."""

    decodes = ("argmax",)
    default_decode = "argmax"

    def new_model(self):
        from seqlab.models import resolve_encoder

        return MlpTagger.on_encoder(resolve_encoder(self.cfg.model.encoder), labels=self.labels,
                                    head=self.name, options={})

    @classmethod
    def load_model(cls, directory, meta):
        return load_encoder_model(MlpTagger, directory)

    def decodings(self, scores, outputs, names):
        return {"argmax": [(s.argmax(-1).tolist(), s.softmax(-1).max(-1).values.tolist())
                           for s in scores]}
