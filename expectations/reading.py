"""Reading an extract (../shared/CONTRACT.md section 1) into a DataFrame, with clear errors.

CSV (``.csv``, ``.csv.gz``) or Parquet (``.parquet``, ``.pq``), chosen by the file's ending, or
a SQL source file (``.source.yaml``: a database URL and a query, `expectations.sql`).
Every problem is raised as one `ExtractError` whose message is a single paragraph naming the
file and the problem. Messages never quote the file's contents (only its header names, line
numbers and sizes), since an extract holds patient data.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import pandas as pd

from diffusion.errors import InputError
from diffusion.hashing import sha256
from expectations.sql import fingerprint_source, is_source, read_source

CSV_ENDINGS = (".csv", ".csv.gz")
PARQUET_ENDINGS = (".parquet", ".pq")
SUPPORTED = CSV_ENDINGS + PARQUET_ENDINGS
_OTHER_DELIMITERS = {";": "semicolons (';')", "\t": "tabs", "|": "pipes ('|')"}
_SNIFF_BYTES = 64 * 1024


class ExtractError(InputError):
    """An extract file that cannot be read as a table."""


def fingerprint(path: str | Path) -> str:
    """SHA-256 (hex) of the file's bytes (of a SQL source: of its query and result): the
    extract's identity in runs and releases."""
    if is_source(path):
        return fingerprint_source(path)
    path = Path(path)
    _check_file(path)
    return sha256(path)


def read_extract(path: str | Path) -> pd.DataFrame:
    """The extract at `path` as a DataFrame (at least one column and one row)."""
    if is_source(path):
        return read_source(path)[0]
    path = Path(path)
    _check_file(path)
    name = path.name.lower()
    if name.endswith(CSV_ENDINGS):
        df = _read_csv(path)
    elif name.endswith(PARQUET_ENDINGS):
        df = _read_parquet(path)
    else:
        raise ExtractError(
            f"Extract {path} has an unsupported file ending ('{''.join(path.suffixes) or path.name}'): "
            f"use CSV ({', '.join(CSV_ENDINGS)}), Parquet ({', '.join(PARQUET_ENDINGS)}) or a SQL source file (.source.yaml)."
        )
    if len(df.columns) == 0:
        raise ExtractError(f"Extract {path} has no columns.")
    if len(df) == 0:
        raise ExtractError(
            f"Extract {path} has a header ({len(df.columns)} column(s)) but no rows: "
            "it holds no patient visits (was it truncated?)."
        )
    return df


def read_with_fingerprint(path: str | Path) -> tuple[pd.DataFrame, str]:
    """(the extract, its fingerprint); a SQL source's query runs once for both."""
    if is_source(path):
        return read_source(path)
    return read_extract(path), fingerprint(path)


# ---- helpers --------------------------------------------------------------------------------
def _check_file(path: Path) -> None:
    if not path.exists():
        raise ExtractError(f"Extract file {path} does not exist.")
    if path.is_dir():
        raise ExtractError(f"Extract path {path} is a folder, not a file: give the CSV or Parquet file itself.")
    if path.stat().st_size == 0:
        raise ExtractError(f"Extract file {path} is empty (0 bytes): no header and no rows.")


def _head_bytes(path: Path) -> bytes:
    """The first bytes of the (decompressed) file, for sniffing."""
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return fh.read(_SNIFF_BYTES)
        with path.open("rb") as fh:
            return fh.read(_SNIFF_BYTES)
    except (OSError, EOFError) as exc:  # a .gz that is not gzip, or a truncated one
        raise ExtractError(
            f"Extract {path} cannot be decompressed ({type(exc).__name__}): it is not a readable gzip file."
        ) from None


def _read_csv(path: Path) -> pd.DataFrame:
    head = _head_bytes(path)
    if head.startswith(b"PAR1"):
        raise ExtractError(f"Extract {path} is a Parquet file but its name ends in .csv: rename it to .parquet.")
    if b"\x00" in head:
        raise ExtractError(f"Extract {path} is not a table: it holds binary data, not comma-separated text.")
    if not head.strip():
        raise ExtractError(f"Extract {path} holds only blank space: no header and no rows.")
    # The header line: decoded on its own so its names can be checked before the full parse.
    first_line = head.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        header_text = first_line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    try:
        header = next(csv.reader(io.StringIO(header_text)), [])
    except csv.Error:
        header = header_text.split(",")
    if "," not in header_text:
        for sep, words in _OTHER_DELIMITERS.items():
            if sep in header_text:
                raise ExtractError(
                    f"Extract {path} uses the wrong delimiter: its header is separated by {words}, not commas, "
                    "so it would be read as a single column. Save it as comma-separated CSV (or as Parquet)."
                )
    try:
        df = pd.read_csv(path, encoding="utf-8-sig", low_memory=False, compression="infer")
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except pd.errors.EmptyDataError:
        raise ExtractError(f"Extract {path} has no header and no rows.") from None
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().split("\n")[-1]
        # pandas' parser messages hold line and field counts, never cell contents.
        raise ExtractError(
            f"Extract {path} is not a well-formed CSV table ({detail}): every row must have as many "
            "comma-separated fields as the header."
        ) from None
    except (OSError, EOFError) as exc:
        raise ExtractError(f"Extract {path} cannot be read ({type(exc).__name__}).") from None
    names = [h.strip() for h in header]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes and len(names) == len(df.columns):
        raise ExtractError(f"Extract {path} names column(s) {dupes} more than once in its header.")
    return df


def _not_utf8(path: Path) -> ExtractError:
    return ExtractError(
        f"Extract {path} is not UTF-8 text (it may be Latin-1/Windows-1252 encoded, or not text at all): re-save it as UTF-8 CSV."
    )


def _read_parquet(path: Path) -> pd.DataFrame:
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"PAR1":
        raise ExtractError(
            f"Extract {path} is not a Parquet file (its name ends in .parquet but it lacks the Parquet signature)."
        )
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise ExtractError(f"Extract {path} is a damaged or truncated Parquet file ({type(exc).__name__}).") from None
