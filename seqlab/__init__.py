"""seqlab: sequence labelling (NER) and span-extraction QA with losses built for class imbalance."""

__version__ = "0.1.0"


def load(directory, **options):
    """A trained run loaded for prediction: ``seqlab.load(DIR).predict(["a text", ...])``
    (:class:`seqlab.api.Labeller`)."""
    from .api import load as _load

    return _load(directory, **options)
