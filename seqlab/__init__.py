"""seqlab: sequence labelling (NER) and span-extraction QA with losses built for class imbalance."""

__version__ = "0.1.0"
