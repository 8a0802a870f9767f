"""Tokenizers: text in, token strings out.

Each tokenizer is a `Tokenizer` with a `name`, a `version` (bump it whenever the output
can change, since it feeds the data fingerprint) and a `tokenize` function.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ramsweep.errors import DataError


@dataclass(frozen=True)
class Tokenizer:
    name: str
    version: int
    tokenize: Callable[[str], list[str]]


# A word is a run of letters that keeps inner hyphens and apostrophes ("loving-kindness",
# "king's") and a trailing apostrophe ("sons'", "Felix'"): in the KJV apostrophes only
# ever mark possessives, never quotes. A number is one token; any other non-space character is
# a token of its own ("sin--;" -> "sin", "-", "-", ";"), so no text is ever dropped.
# Case is kept.
_LETTERS = r"[^\W\d_]+"
_WORD_RE = re.compile(rf"{_LETTERS}(?:['-]{_LETTERS})*'?|\d+|\S")


def word_tokenize(text: str) -> list[str]:
    """Split text into words and punctuation marks."""
    return _WORD_RE.findall(text)


WORD = Tokenizer(name="word", version=1, tokenize=word_tokenize)

TOKENIZERS: dict[str, Tokenizer] = {WORD.name: WORD}


def get_tokenizer(name: str) -> Tokenizer:
    """The tokenizer called `name`; DataError if there is none."""
    try:
        return TOKENIZERS[name]
    except KeyError:
        raise DataError(
            f"unknown tokenizer {name!r}; choose one of: {', '.join(sorted(TOKENIZERS))}"
        ) from None
