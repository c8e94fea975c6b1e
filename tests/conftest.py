import os
import sys
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers (simulated.py) import by name
DEMO_DATA = ROOT / "flows" / "data" / "pbcseq.csv"
DEMO_SCHEMA = ROOT / "flows" / "data" / "pbc.yaml"


@pytest.fixture(scope="session")
def pbc() -> pd.DataFrame:
    return pd.read_csv(DEMO_DATA)


@pytest.fixture(scope="session")
def pbc_schema():
    from diffusion.data.schema import Schema

    return Schema.load(DEMO_SCHEMA)


def pytest_collection_modifyitems(config, items):
    """The stack tests first: they mostly wait on servers and workers, so under several processes (scripts/test.sh --slow)
    the other tests run beside them rather than after them."""
    items.sort(key=lambda item: item.get_closest_marker("stack") is None)
