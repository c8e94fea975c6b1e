"""expectations.reading: CSV/Parquet extracts in, one clear ExtractError (an InputError) for each broken file."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pandas as pd
import pytest

from diffusion.errors import InputError
from expectations.reading import ExtractError, fingerprint, read_extract

ROOT = Path(__file__).resolve().parents[1]
PBC_CSV = ROOT / "flows" / "data" / "pbcseq.csv"
SECRET = "PAT-SECRET-4711"  # a "patient id" that must never be echoed back
ROWS = f"id,day,age\n{SECRET},0,58.1\n{SECRET},10,58.1\n"


def _error(path: Path) -> str:
    with pytest.raises(ExtractError) as info:
        read_extract(path)
    assert isinstance(info.value, InputError)
    msg = str(info.value)
    assert "\n" not in msg, "one paragraph"
    assert SECRET not in msg and "58.1" not in msg, "no raw values in the message"
    assert str(path) in msg, "names the file"
    return msg.lower()


def test_reads_csv_parquet_and_gzip(tmp_path: Path) -> None:
    df = read_extract(PBC_CSV)
    assert len(df) > 1000 and {"id", "day", "sex"} <= set(df.columns)
    pq = tmp_path / "x.parquet"
    df.to_parquet(pq)
    pd.testing.assert_frame_equal(read_extract(pq), df)
    gz = tmp_path / "x.csv.gz"
    gz.write_bytes(gzip.compress(PBC_CSV.read_bytes()))
    pd.testing.assert_frame_equal(read_extract(gz), df)
    alt = tmp_path / "x.pq"
    df.to_parquet(alt)
    assert len(read_extract(alt)) == len(df)


def test_fingerprint_is_sha256_of_bytes(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text(ROWS)
    assert fingerprint(p) == hashlib.sha256(ROWS.encode()).hexdigest()
    assert fingerprint(str(p)) == fingerprint(p)
    with pytest.raises(ExtractError):
        fingerprint(tmp_path / "nope.csv")


def test_missing_file(tmp_path: Path) -> None:
    assert "does not exist" in _error(tmp_path / "nope.csv")


def test_folder(tmp_path: Path) -> None:
    d = tmp_path / "extract.csv"
    d.mkdir()
    assert "folder" in _error(d)


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "e.csv"
    p.write_bytes(b"")
    assert "empty" in _error(p)


def test_blank_file(tmp_path: Path) -> None:
    p = tmp_path / "b.csv"
    p.write_text("\n\n  \n")
    assert "no header" in _error(p)


@pytest.mark.parametrize("sep, word", [(";", "semicolon"), ("\t", "tab"), ("|", "pipe")])
def test_wrong_delimiter(tmp_path: Path, sep: str, word: str) -> None:
    p = tmp_path / "d.csv"
    p.write_text(ROWS.replace(",", sep))
    msg = _error(p)
    assert "delimiter" in msg and word in msg


def test_wrong_delimiter_with_decimal_commas(tmp_path: Path) -> None:
    p = tmp_path / "eu.csv"
    p.write_text(f"id;day;age\n{SECRET};0;58,1\n")
    assert "semicolon" in _error(p)


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "latin.csv"
    p.write_bytes("id,day,sex\n1,0,f\u00e9minin\n".encode("latin-1"))
    assert "utf-8" in _error(p)


def test_not_utf8_header(tmp_path: Path) -> None:
    p = tmp_path / "latin.csv"
    p.write_bytes("id,d\u00e4y\n1,0\n".encode("latin-1"))
    assert "utf-8" in _error(p)


def test_header_only(tmp_path: Path) -> None:
    p = tmp_path / "h.csv"
    p.write_text("id,day,age\n")
    msg = _error(p)
    assert "no rows" in msg and "header" in msg


def test_header_only_parquet(tmp_path: Path) -> None:
    p = tmp_path / "h.parquet"
    pd.DataFrame({"id": pd.Series([], dtype="int64"), "day": pd.Series([], dtype="float64")}).to_parquet(p)
    assert "no rows" in _error(p)


def test_binary_junk_is_not_a_table(tmp_path: Path) -> None:
    p = tmp_path / "junk.csv"
    p.write_bytes(bytes(range(256)) * 20)
    assert "not a table" in _error(p)


def test_parquet_that_is_not_parquet(tmp_path: Path) -> None:
    p = tmp_path / "fake.parquet"
    p.write_text(ROWS)
    assert "not a parquet file" in _error(p)


def test_truncated_parquet(tmp_path: Path) -> None:
    p = tmp_path / "cut.parquet"
    pd.DataFrame({"id": [SECRET] * 50, "day": range(50)}).to_parquet(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    assert "damaged or truncated" in _error(p)


def test_parquet_named_csv(tmp_path: Path) -> None:
    p = tmp_path / "really.csv"
    pd.DataFrame({"id": [SECRET], "day": [0]}).to_parquet(p)
    assert "parquet" in _error(p)


def test_gzip_that_is_not_gzip(tmp_path: Path) -> None:
    p = tmp_path / "x.csv.gz"
    p.write_text(ROWS)
    assert "gzip" in _error(p)


def test_unsupported_ending(tmp_path: Path) -> None:
    p = tmp_path / "x.xlsx"
    p.write_text(ROWS)
    msg = _error(p)
    assert "unsupported" in msg and ".csv" in msg and ".parquet" in msg


def test_ragged_rows(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text(ROWS + f"{SECRET},20,58.1,extra,fields\n")
    msg = _error(p)
    assert "line 4" in msg and "fields" in msg


def test_duplicate_header_names(tmp_path: Path) -> None:
    p = tmp_path / "dup.csv"
    p.write_text(f"id,day,age,age\n{SECRET},0,58.1,58.1\n")
    assert "'age'" in _error(p)
