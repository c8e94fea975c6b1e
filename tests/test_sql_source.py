"""SQL sources (expectations/sql.py): a `.source.yaml` file is an extract wherever a file is. The
result is the table's rows, its fingerprint depends on the rows and the query and not on their
storage order or the chunk size, bad input is one paragraph that quotes no value and no
password, and the watcher retrains once per changed result. SQLite (embedded) and PostgreSQL."""

import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from databases import pg_database, pg_execute, pg_url
from test_pipeline import DEMO_DATA, DEMO_SCHEMA, healthgym

from diffusion.errors import InputError
from expectations.reading import fingerprint, read_extract, read_with_fingerprint
from expectations.sql import SourceError, load_source, redact


@pytest.fixture(scope="module")
def pbc_csv() -> pd.DataFrame:
    return pd.read_csv(DEMO_DATA)


def sqlite_source(folder: Path, df: pd.DataFrame, name: str = "pbc", **extra) -> Path:
    with sqlite3.connect(folder / f"{name}.db") as con:
        df.to_sql("visits", con, index=False, if_exists="replace")
    lines = [f"url: sqlite:///{name}.db", "table: visits", "order_by: [id, day]"] + [f"{k}: {v}" for k, v in extra.items()]
    (folder / f"{name}.source.yaml").write_text("\n".join(lines) + "\n")
    return folder / f"{name}.source.yaml"


def test_a_sqlite_source_reads_the_table_and_its_fingerprint_ignores_storage_order_and_chunks(tmp_path, pbc_csv):
    src = sqlite_source(tmp_path, pbc_csv.sample(frac=1, random_state=3), chunksize=97)  # shuffled, small chunks
    df, fp = read_with_fingerprint(src)
    pd.testing.assert_frame_equal(df, pbc_csv.sort_values(["id", "day"]).reset_index(drop=True), check_dtype=False)
    assert fp == fingerprint(src) and len(fp) == 64
    other = tmp_path / "other"
    other.mkdir()
    assert fingerprint(sqlite_source(other, pbc_csv, chunksize=5000)) == fp  # another storage order, another chunk size
    changed = pbc_csv.copy()
    changed.loc[7, "bili"] += 0.1
    assert fingerprint(sqlite_source(other, changed)) != fp
    assert fingerprint(sqlite_source(other, pbc_csv.iloc[:-1])) != fp
    (tmp_path / "q.source.yaml").write_text("url: sqlite:///pbc.db\nquery: SELECT * FROM visits WHERE day >= 0\n")
    assert fingerprint(tmp_path / "q.source.yaml") != fp  # the query text is part of the identity
    assert len(read_extract(tmp_path / "q.source.yaml")) == len(pbc_csv)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("url: sqlite:///missing.db\ntable: visits\n", "does not exist"),
        ("url: sqlite:///pbc.db\ntable: nosuch\n", "no such table"),
        ("url: sqlite:///pbc.db\nquery: SELEC nonsense\n", "the query failed"),
        ("url: nosuchdialect://x/y\ntable: visits\n", "cannot be used"),
        ("url_env: HG_TEST_UNSET_URL\ntable: visits\n", "HG_TEST_UNSET_URL"),
        ("url: sqlite:///pbc.db\ntable: visits\norder_by: [nope]\n", "order_by"),
        ("url: sqlite:///pbc.db\nquery: SELECT * FROM visits WHERE id < 0\n", "no rows"),
        ("url: sqlite:///pbc.db\n", "exactly one of query"),
        ("url: postgresql://me:hunter2-secret@db/x\ntable: t\nbogus: 1\n", "holds a password"),
    ],
)
def test_bad_sources_are_one_input_error_without_values_or_passwords(tmp_path, pbc_csv, spec, words):
    sqlite_source(tmp_path, pbc_csv)
    (tmp_path / "bad.source.yaml").write_text(spec)
    with pytest.raises(InputError) as err:
        read_extract(tmp_path / "bad.source.yaml")
    msg = str(err.value)
    assert words in msg and "\n" not in msg
    assert "hunter2" not in msg and "58.765" not in msg
    assert not (tmp_path / "missing.db").exists()  # connecting never creates an empty database file


def test_redact_hides_the_password():
    assert redact("postgresql://u:pw-123@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert "pw" not in redact("::not a url pw-123")


def test_the_cli_validates_a_sql_source_and_refuses_a_broken_one_with_exit_2(tmp_path, pbc_csv):
    src = sqlite_source(tmp_path, pbc_csv)
    res = healthgym(tmp_path, "validate", str(src), "--schema", str(DEMO_SCHEMA))
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"sha256 {fingerprint(src)}" in res.stdout and "1945 rows, 312 patients" in res.stdout
    (tmp_path / "broken.source.yaml").write_text("url: sqlite:///pbc.db\ntable: nosuch\n")
    res = healthgym(tmp_path, "validate", str(tmp_path / "broken.source.yaml"), "--schema", str(DEMO_SCHEMA))
    assert res.returncode == 2 and "no such table" in res.stderr and "Traceback" not in res.stderr


def test_the_watcher_sees_a_sql_source_once_per_result(tmp_path, pbc_csv, monkeypatch):
    """new_extracts decides what the watcher retrains on: once for a result, never again for the same."""
    from flows import serve

    monkeypatch.setattr(serve, "STATE_DIR", tmp_path / "state")
    src = sqlite_source(tmp_path, pbc_csv)
    inbox = tmp_path / "inbox"
    ticks = [serve.new_extracts(inbox, [str(src)]) for _ in range(2)]
    assert [len(t) for t in ticks] == [1, 0] and ticks[0][0].path == src.resolve()
    with sqlite3.connect(tmp_path / "pbc.db") as con:
        con.execute("INSERT INTO visits (id, day, bili) VALUES (9999, 0, 1.0)")
    ticks = [serve.new_extracts(inbox, [str(src)]) for _ in range(2)]
    assert [len(t) for t in ticks] == [1, 0] and ticks[0][0].fingerprint == fingerprint(src)


# ---- PostgreSQL ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg(pbc_csv):
    """A database with the PBC visits in table cohort.visits (stored shuffled)."""
    from sqlalchemy import create_engine

    with pg_database() as name:
        eng = create_engine(pg_url(name).replace("postgresql://", "postgresql+psycopg2://"))
        with eng.begin() as conn:
            conn.exec_driver_sql("CREATE SCHEMA cohort")
            pbc_csv.sample(frac=1, random_state=1).to_sql("visits", conn, schema="cohort", index=False)
        eng.dispose()
        yield name


def pg_source(folder: Path, name: str, body: str) -> Path:
    (folder / "pg.source.yaml").write_text(body)
    return folder / "pg.source.yaml"


def test_a_postgresql_source_streams_the_table_and_a_change_changes_its_fingerprint(tmp_path, pg, pbc_csv, monkeypatch):
    src = pg_source(tmp_path, pg, f"url: {pg_url(pg)}\ntable: cohort.visits\norder_by: [id, day]\nchunksize: 200\n")
    df, fp = read_with_fingerprint(src)
    pd.testing.assert_frame_equal(df, pbc_csv.sort_values(["id", "day"]).reset_index(drop=True), check_dtype=False)
    from flows import serve

    monkeypatch.setattr(serve, "STATE_DIR", tmp_path / "state")
    assert [len(serve.new_extracts(tmp_path / "inbox", [str(src)])) for _ in range(2)] == [1, 0]
    pg_execute(pg, "INSERT INTO cohort.visits (id, day, bili) VALUES (9999, 0, 1.5)")
    try:
        assert fingerprint(src) != fp
        assert [len(serve.new_extracts(tmp_path / "inbox", [str(src)])) for _ in range(2)] == [1, 0]
    finally:
        pg_execute(pg, "DELETE FROM cohort.visits WHERE id = 9999")
    assert fingerprint(src) == fp  # back to the first result: the same identity (already seen: no retraining)
    assert serve.new_extracts(tmp_path / "inbox", [str(src)]) == []


def test_postgresql_errors_quote_no_value_and_no_password(tmp_path, pg, monkeypatch):
    pg_execute(pg, "CREATE TABLE IF NOT EXISTS cohort.texts (v text)", "INSERT INTO cohort.texts VALUES ('zz-cell-value-77')")
    src = pg_source(tmp_path, pg, f"url: {pg_url(pg)}\nquery: SELECT CAST(v AS integer) AS n FROM cohort.texts\n")
    with pytest.raises(SourceError) as err:
        read_extract(src)
    assert "zz-cell-value-77" not in str(err.value) and "DataError" in str(err.value)
    src = pg_source(tmp_path, pg, f"url: {pg_url(pg)}\ntable: cohort.nosuch\n")
    with pytest.raises(SourceError, match="does not exist"):
        read_extract(src)
    # the URL, password included, from the environment; a server that is not there
    monkeypatch.setenv("HG_TEST_URL", pg_url(pg, password="pw-never-shown").replace("5432", "1"))
    src = pg_source(tmp_path, pg, "url_env: HG_TEST_URL\ntable: cohort.visits\n")
    assert load_source(src).shown.count("***") == 1 and "pw-never-shown" not in repr(load_source(src))
    with pytest.raises(SourceError) as err:
        read_extract(src)
    assert "pw-never-shown" not in str(err.value) and "***" in str(err.value)


def test_serve_watches_the_named_sources_and_refuses_a_bad_one_at_once(tmp_path, pbc_csv, monkeypatch):
    import prefect

    from flows import serve

    served = []
    monkeypatch.setattr(prefect, "serve", lambda *deployments: served.extend(deployments))
    monkeypatch.chdir(tmp_path)
    src = sqlite_source(tmp_path, pbc_csv)
    serve.serve(inbox="inbox", schema=str(DEMO_SCHEMA), name=None, cron="0 2 * * *", timezone="UTC", sources=[str(src)])
    watcher = next(d for d in served if d.name == "retrain-on-new-extract")
    assert watcher.parameters["sources"] == [str(src.resolve())]
    (tmp_path / "bad.source.yaml").write_text("url: sqlite:///pbc.db\n")
    with pytest.raises(SourceError, match="exactly one of query"):
        serve.serve(
            inbox="inbox", schema=str(DEMO_SCHEMA), name=None, cron="0 2 * * *", timezone="UTC", sources=["bad.source.yaml"]
        )


@pytest.mark.slow
def test_data_parallel_processes_read_a_sql_source_themselves(tmp_path, pbc_csv, capfd):
    from diffusion.config import Config
    from tasks.torchrun import launch

    src = sqlite_source(tmp_path, pbc_csv)
    small = ["train.max_steps=10", "train.eval_every=5", "train.warmup_steps=2", "diffusion.steps=20", "sampling.steps=5"]
    small += ["model.base_channels=16", "model.time_embed_dim=16", "train.memorisation_patients=16", "encoding.calibrate=false"]
    cfg = Config().with_overrides([*small, "train.processes=2"])
    model, result = launch(str(src), str(DEMO_SCHEMA), cfg, fingerprint=fingerprint(src))
    assert result.processes == 2 and result.steps == 10 and model.meta.patients > 200  # the training patients of 312
    capfd.readouterr()
    with pytest.raises(Exception):
        launch(str(src), str(DEMO_SCHEMA), cfg, fingerprint="0" * 64)  # a result that is not the one asked for
    assert "changed since training was asked for" in capfd.readouterr().err  # each process refused it
