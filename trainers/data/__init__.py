"""Bring your own data: load it, find what is wrong with it, and tokenise it once per study."""

from trainers.data.config import DataConfig, OnProblem, SplitConfig
from trainers.data.encode import encode_cached, fingerprint, tokenizer_identity
from trainers.data.errors import DataError
from trainers.data.load import LoadedData, Split, load_data
from trainers.data.report import DataReport, Problem

__all__ = [
    "DataConfig",
    "DataError",
    "DataReport",
    "LoadedData",
    "OnProblem",
    "Problem",
    "Split",
    "SplitConfig",
    "encode_cached",
    "fingerprint",
    "load_data",
    "tokenizer_identity",
]
