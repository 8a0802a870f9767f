"""Write tests/fixtures/: a tiny WikiText-2 in each of its real download layouts.

    python scripts/make_fixtures.py            # rewrites tests/fixtures/wikitext/

The text is made up, in WikiText's conventions: every line starts with a space, blank
lines are " ", headings are " = Title = " / " = = Section = = ", hyphens and separators
inside numbers are split out (" @-@ ", " @,@ ", " @.@ "); the tokenized variant replaces
rare words with "<unk>". Layouts written:

    classic/wikitext-2-raw/wiki.{train,valid,test}.raw         (the raw zip)
    classic/wikitext-2/wiki.{train,valid,test}.tokens          (the tokenized zip)
    hf/wikitext-2-raw-v1/{train,validation,test}-00000-of-00001.parquet
    hf/wikitext-2-v1/{train,validation,test}-00000-of-00001.parquet

The parquet files follow Hugging Face's conversion of the same files: one row per line in a
`text` column, each line with its "\\n", whitespace-only lines stored as "".
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "wikitext"

TRAIN = """
 = Harrow Lighthouse = 

 Harrow Lighthouse is a disused lighthouse on the northern headland of a small island . It was built in 1871 from granite quarried on the island , and its lamp was first lit on 3 March 1872 . The tower is 27 @.@ 4 metres ( 90 ft ) tall . 

 = = History = = 

 The keeper 's cottage was enlarged in 1903 , when a second family moved to the station . The lamp was converted to electric power in the 1950s , and the last keeper left in 1987 . 

 = = Design = = 

 The lantern room holds a first @-@ order Fresnel lens made in Paris . A café for visitors now occupies the former oil store — open from April to October . 

 = Mirelle Okafor = 

 Mirelle Okafor ( born 14 June 1968 ) is a Nigerian @-@ French composer and pianist . Her first symphony , Écoute , was performed in Lyon in 1994 and recorded two years later . 

 Okafor studied in Lagos before moving to Paris , where she taught harmony to over 1 @,@ 200 students . 
"""

VALID = """
 = Stonechat Ridge = 

 Stonechat Ridge is a limestone escarpment about 12 kilometres long . Its southern slopes support rare orchids , and a footpath follows the crest from Kelby to the old quarry at Thorne . 
"""

TEST = """
 = The Lantern Fair = 

 The Lantern Fair is held on the first Saturday of November . Paper lanterns are carried through the streets — some over 3 metres high — and set on the river at dusk . 
"""

RARE = {"Harrow", "Fresnel", "Mirelle", "Okafor", "Écoute", "Stonechat", "Kelby", "Thorne"}

SPLITS = {"train": ("train", TRAIN), "validation": ("valid", VALID), "test": ("test", TEST)}


def raw_lines(text: str) -> list[str]:
    """The file's lines, each with its "\\n"; blank lines are " \\n" as in WikiText."""
    return [(line or " ") + "\n" for line in text.splitlines()]


def tokens_lines(text: str) -> list[str]:
    return [
        " ".join("<unk>" if w in RARE else w for w in line.split(" ")) for line in raw_lines(text)
    ]


def write_fixtures(root: Path = ROOT) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for flavour, lines_of, classic, ext, hf in (
        ("raw", raw_lines, "wikitext-2-raw", "raw", "wikitext-2-raw-v1"),
        ("tokens", tokens_lines, "wikitext-2", "tokens", "wikitext-2-v1"),
    ):
        for split, (short, text) in SPLITS.items():
            lines = lines_of(text)
            path = root / "classic" / classic / f"wiki.{short}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes("".join(lines).encode("utf-8"))
            rows = [line if line.strip() else "" for line in lines]
            path = root / "hf" / hf / f"{split}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({"text": pa.array(rows, pa.string())}), path)


if __name__ == "__main__":
    write_fixtures(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
