"""Writing a release folder: data (Parquet + CSV), report, metrics, manifest with SHA-256 of
every file. Written whole into a temporary folder and moved into place in one step; an
existing release is never overwritten. The destination may be any fsspec URL."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
import pandas as pd


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def releases_root() -> str:
    return os.environ.get("HEALTHGYM_RELEASES") or str(Path.cwd() / "releases")


def write_release(
    synthetic: pd.DataFrame,
    *,
    name: str,
    manifest: dict[str, Any],
    report_dir: Path | None = None,
    root: str | None = None,
    timestamp: datetime | None = None,
) -> str:
    """Publish `releases/<name>/<UTC timestamp>/` and return its path or URL."""
    root = root or releases_root()
    stamp = (timestamp or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%S%fZ")
    fs, base = fsspec.core.url_to_fs(root)
    target = f"{base.rstrip('/')}/{name}/{stamp}"
    local = isinstance(fs, LocalFileSystem)
    if fs.exists(target):
        raise FileExistsError(f"Release {target} already exists; releases are never overwritten.")
    with tempfile.TemporaryDirectory(prefix="healthgym-release-") as tmpdir:
        stage = Path(tmpdir) / stamp
        stage.mkdir()
        synthetic.to_parquet(stage / "synthetic.parquet", index=False)
        synthetic.to_csv(stage / "synthetic.csv", index=False)
        if report_dir is not None:
            for item in ("report.html", "metrics.json"):
                if (Path(report_dir) / item).exists():
                    shutil.copy2(Path(report_dir) / item, stage / item)
            if (Path(report_dir) / "figures").is_dir():
                shutil.copytree(Path(report_dir) / "figures", stage / "figures")
        files = sorted(p for p in stage.rglob("*") if p.is_file())
        full = dict(manifest)
        full.update({
            "release": stamp,
            "created_utc": datetime.now(timezone.utc).isoformat(),
            "rows": int(len(synthetic)),
            "files": {str(p.relative_to(stage)): sha256(p) for p in files},
        })
        (stage / "manifest.json").write_text(json.dumps(full, indent=2, default=str))
        if local:
            parent = Path(target).parent
            parent.mkdir(parents=True, exist_ok=True)
            landing = Path(tempfile.mkdtemp(prefix=".incoming-", dir=parent))
            shutil.move(str(stage), landing / stamp)
            os.rename(landing / stamp, target)  # atomic on one filesystem; fails if target exists
            landing.rmdir()
        else:
            staging = f"{target}.incoming"
            fs.put(str(stage), staging, recursive=True)
            fs.mv(staging, target, recursive=True)
    return target if local else fs.unstrip_protocol(target)


def verify_release(path: str | Path) -> list[str]:
    """Files whose SHA-256 no longer matches the manifest (empty list: the release verifies)."""
    path = Path(path)
    manifest = json.loads((path / "manifest.json").read_text())
    return [f for f, digest in manifest["files"].items() if not (path / f).exists() or sha256(path / f) != digest]
