"""DataSpec: which corpus, where it lives, which tokenizer.

Option names in messages are the CLI's (`--data`, `--data-path`, `--tokenizer`,
`--tokenizer-files`), since that is where a user sets them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ramsweep.errors import DataError
from ramsweep.messages import one_line

CORPUS_KINDS = ("kjv", "wikitext2", "text")
TOKENIZER_NAMES = ("word", "gpt2")
DEFAULT_TOKENIZER = {"kjv": "word", "wikitext2": "gpt2", "text": "word"}

_NEEDS_PATH = {
    "wikitext2": "the folder holding WikiText-2 (wiki.*.raw or wiki.*.tokens files, "
    "or the Hugging Face parquet download)",
    "text": "a UTF-8 text file, or a folder of *.txt files",
}


class DataSpec(BaseModel):
    """The data an experiment set runs on. Paths are resolved when the corpus is loaded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    corpus: Literal["kjv", "wikitext2", "text"] = "kjv"
    path: str | None = None  # folder or file; required for wikitext2 and text, refused for kjv
    tokenizer: Literal["word", "gpt2"] | None = None  # None: DEFAULT_TOKENIZER[corpus]
    tokenizer_files: str | None = None  # folder with GPT-2's encoder.json + vocab.bpe
    full_data: bool = False

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer or DEFAULT_TOKENIZER[self.corpus]

    # Runs before pydantic's own checks so a bad name is a one-line DataError, not a
    # multi-line ValidationError (pydantic lets non-ValueError exceptions through).
    @model_validator(mode="before")
    @classmethod
    def _check_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for key, option, choices in (
            ("corpus", "--data", CORPUS_KINDS),
            ("tokenizer", "--tokenizer", TOKENIZER_NAMES),
        ):
            value = data.get(key)
            if value is not None and value not in choices:
                raise DataError(
                    f"unknown {option} {value!r}; choose one of: {', '.join(sorted(choices))}"
                )
        for key, option in (("path", "--data-path"), ("tokenizer_files", "--tokenizer-files")):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise DataError(f"{option} must be a path, got {value!r}")
            if value is not None and not value.strip():
                data = {**data, key: None}  # an empty option means "not given"
        return data

    @model_validator(mode="after")
    def _check_combination(self) -> DataSpec:
        if self.corpus == "kjv" and self.path is not None:
            raise DataError(
                "--data-path is only for --data wikitext2 or text; kjv is embedded: "
                "drop --data-path or choose another --data"
            )
        if self.corpus in _NEEDS_PATH and self.path is None:
            raise DataError(f"--data {self.corpus} needs --data-path: {_NEEDS_PATH[self.corpus]}")
        if self.tokenizer_files is not None and self.tokenizer_name != "gpt2":
            raise DataError(
                f"--tokenizer-files is only for --tokenizer gpt2 (this data uses "
                f"{self.tokenizer_name}): drop --tokenizer-files or add --tokenizer gpt2"
            )
        return self


def with_options(base: DataSpec | None, **given: Any) -> DataSpec:
    """`base` (a set's `data:`, if any) with the command line's options on top; an option
    left out (None, or False for --full-data) keeps the set's value. Naming another corpus
    starts from that corpus's defaults: a set's wikitext2 path means nothing for kjv."""
    fields = base.model_dump() if base is not None else {}
    given = {k: v for k, v in given.items() if v is not None and v is not False}
    if "corpus" in given and given["corpus"] != fields.get("corpus", "kjv"):
        fields = {"full_data": fields.get("full_data", False)}
    try:
        return DataSpec(**{**fields, **given})
    except ValidationError as err:
        raise DataError(one_line(err, names=OPTION_NAMES)) from None


# The command-line option that sets each field (messages name what the user typed).
OPTION_NAMES = {"corpus": "--data", "path": "--data-path", "tokenizer": "--tokenizer",
                "tokenizer_files": "--tokenizer-files", "full_data": "--full-data"}
