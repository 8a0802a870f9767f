"""Corpus loading and tokenizers."""

from ramsweep.data.corpus import Corpus, load_corpus
from ramsweep.data.spec import DataSpec

__all__ = ["Corpus", "DataSpec", "load_corpus"]
