"""Count-model baselines on the same splits and tokens as the RAM LM experiments.

Every model is fitted on the training split only and scored on every position t >= 1 of each
evaluated split (the bigram needs the previous token; the same positions for all three models,
so they compare). Pure numpy: counts come from `np.unique` on int64 keys v * V + w and are read
back with `searchsorted`, so no V × V matrix is ever built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ramsweep.errors import DataError

BASELINES = ("uniform", "unigram", "kn_bigram")
FALLBACK_DISCOUNT = 0.75  # Chen & Goodman's usual constant, used when n1 or n2 is 0

Probabilities = Callable[[np.ndarray, np.ndarray], np.ndarray]  # p(w | v), elementwise


def uniform_probabilities(train: np.ndarray, vocab_size: int) -> Probabilities:
    """p(w | v) = 1 / V. `train` is taken only so every model has the same signature."""
    return lambda v, w: np.full(np.shape(w), 1.0 / vocab_size)


def unigram_probabilities(train: np.ndarray, vocab_size: int) -> Probabilities:
    """Add-one smoothing over the whole vocabulary: p(w) = (c(w) + 1) / (N + V)."""
    counts = np.bincount(train, minlength=vocab_size)  # (V,)
    p = (counts + 1.0) / (train.shape[0] + vocab_size)
    return lambda v, w: p[w]


@dataclass(frozen=True)
class KNBigram:
    """Interpolated Kneser-Ney bigram with one discount (Chen & Goodman 1998)."""

    vocab_size: int
    discount: float
    keys: np.ndarray  # (bigram types,) int64 v * V + w, sorted
    counts: np.ndarray  # (bigram types,) int64 c(v, w)
    history: np.ndarray  # (V,) int64 c(v): count of v as a bigram history
    followers: np.ndarray  # (V,) int64 N1+(v •)
    continuation: np.ndarray  # (V,) float64 p_cont(w), interpolated with uniform

    def __call__(self, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        v, w = np.asarray(v, dtype=np.int64), np.asarray(w, dtype=np.int64)
        key = v * self.vocab_size + w
        at = np.minimum(np.searchsorted(self.keys, key), self.keys.shape[0] - 1)  # fit keeps >= 1 type
        pair = np.where(self.keys[at] == key, self.counts[at], 0)  # c(v, w)
        c_v = self.history[v]
        seen = c_v > 0
        c = np.where(seen, c_v, 1)  # placeholder 1 avoids 0/0 where the history was never seen
        backoff = self.discount * self.followers[v] * self.continuation[w]
        p_seen = (np.maximum(pair - self.discount, 0.0) + backoff) / c
        return np.where(seen, p_seen, self.continuation[w])


def kn_discount(pair_counts: np.ndarray) -> float:
    """D = n1 / (n1 + 2 n2) from the counts-of-counts of bigram types."""
    n1, n2 = int(np.count_nonzero(pair_counts == 1)), int(np.count_nonzero(pair_counts == 2))
    # With no singletons or no doubletons the estimate is 0 or 1 (no discount, or all mass
    # moved to the lower order): both degenerate, so fall back to the usual 0.75.
    if n1 == 0 or n2 == 0:
        return FALLBACK_DISCOUNT
    return n1 / (n1 + 2 * n2)


def kn_bigram_probabilities(train: np.ndarray, vocab_size: int) -> KNBigram:
    """Fit the interpolated KN bigram on `train` (at least two tokens)."""
    if train.shape[0] < 2:
        raise DataError(f"the training split has {train.shape[0]} tokens; a bigram baseline needs at least 2")
    V = vocab_size
    keys, counts = np.unique(train[:-1].astype(np.int64) * V + train[1:], return_counts=True)
    d = kn_discount(counts)
    history = np.bincount(train[:-1], minlength=V)
    followers = np.bincount(keys // V, minlength=V)  # N1+(v •)
    preceders = np.bincount(keys % V, minlength=V)  # N1+(• w)
    types = keys.shape[0]  # N1+(• •)
    # The continuation unigram gives its discounted mass to the uniform, so no token has p = 0.
    continuation = np.maximum(preceders - d, 0.0) / types + d * np.count_nonzero(preceders) / types / V
    return KNBigram(V, d, keys, counts.astype(np.int64), history, followers, continuation)


FITS: dict[str, Callable[[np.ndarray, int], Probabilities]] = {
    "uniform": uniform_probabilities,
    "unigram": unigram_probabilities,
    "kn_bigram": kn_bigram_probabilities,
}


def baselines(
    train: np.ndarray,
    evaluated: dict[str, np.ndarray],
    vocab_size: int,
    byte_lengths: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, dict]]:
    """{"uniform": {"validation": {...}, "test": {...}}, "unigram": {...}, "kn_bigram": {...}}

    Each leaf is {"examples", "ce" (nats), "ppl", "bpb"}: bpb = Σ −log2 p / Σ byte_lengths[split][1:],
    None without byte lengths; ce, ppl and bpb are None for a split with no evaluated position.
    """
    train = checked_tokens("train", train, vocab_size)
    splits = {name: checked_tokens(name, tokens, vocab_size) for name, tokens in evaluated.items()}
    nbytes = {name: split_bytes(name, splits[name], byte_lengths) for name in splits}
    result = {}
    for model in BASELINES:
        p = FITS[model](train, vocab_size)
        result[model] = {name: metrics(p(t[:-1], t[1:]), nbytes[name]) for name, t in splits.items()}
    return result


def metrics(p: np.ndarray, nbytes: int | None) -> dict:
    n = p.shape[0]
    if n == 0:
        return {"examples": 0, "ce": None, "ppl": None, "bpb": None}
    total_nats = float(-np.log(p).sum())
    ce = total_nats / n
    bpb = total_nats / math.log(2) / nbytes if nbytes else None
    return {"examples": int(n), "ce": ce, "ppl": math.exp(ce), "bpb": bpb}


def checked_tokens(name: str, tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise DataError(f"split {name!r} must be a 1-d integer token array, got {tokens.dtype} {tokens.shape}")
    if tokens.shape[0] and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise DataError(f"split {name!r} has token ids outside [0, {vocab_size})")
    return tokens.astype(np.int64, copy=False)


def split_bytes(name: str, tokens: np.ndarray, byte_lengths: dict[str, np.ndarray] | None) -> int | None:
    """UTF-8 bytes of the evaluated positions (t >= 1), or None without byte lengths."""
    if byte_lengths is None:
        return None
    if name not in byte_lengths or np.shape(byte_lengths[name]) != tokens.shape:
        raise DataError(f"byte_lengths[{name!r}] must hold one length per token of split {name!r}")
    return int(np.asarray(byte_lengths[name])[1:].sum())
