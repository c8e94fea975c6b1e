"""Writing a release folder: data (Parquet + CSV), report, metrics, manifest with SHA-256 of
every file. Written whole into a temporary folder and moved into place in one step; an
existing release is never overwritten. The destination may be any fsspec URL.

On a local disk the folder is written under `<root>/.incoming/<pid>@<host>@.../` (the same
filesystem, outside every `<root>/<name>/`) and renamed into place, so a writer killed half-way
leaves nothing under `<root>/<name>/`; the next write removes what dead writers left there.
`before_commit(path)` runs once the folder is complete and before it is moved into place (the
pipeline records the release in MLflow there), so when it fails no release appears."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import fsspec
import pandas as pd
from fsspec.implementations.local import LocalFileSystem

from diffusion.hashing import sha256


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
    before_commit: Callable[[str], None] | None = None,
) -> str:
    """Publish `releases/<name>/<UTC timestamp>/` and return its path or URL; `before_commit`
    gets that path while the folder is still staged, and an exception from it publishes nothing."""
    root = root or releases_root()
    stamp = (timestamp or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%S%fZ")
    fs, base = fsspec.core.url_to_fs(root)
    target = f"{base.rstrip('/')}/{name}/{stamp}"
    local = isinstance(fs, LocalFileSystem)
    if fs.exists(target):
        raise FileExistsError(f"Release {target} already exists; releases are never overwritten.")
    if local:
        landing = _landing(Path(base))
        try:
            stage = landing / stamp
            _write_folder(stage, synthetic, manifest, report_dir, stamp)
            if before_commit is not None:
                before_commit(target)
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            os.rename(stage, target)  # atomic on one filesystem; fails if target exists (and is not empty)
        finally:
            shutil.rmtree(landing, ignore_errors=True)
            try:
                landing.parent.rmdir()  # only when no other writer is using it
            except OSError:
                pass
    else:
        with tempfile.TemporaryDirectory(prefix="healthgym-release-") as tmpdir:
            stage = Path(tmpdir) / stamp
            _write_folder(stage, synthetic, manifest, report_dir, stamp)
            if before_commit is not None:
                before_commit(fs.unstrip_protocol(target))
            staging = f"{target}.incoming"
            fs.put(str(stage), staging, recursive=True)
            fs.mv(staging, target, recursive=True)
    return target if local else fs.unstrip_protocol(target)


def _write_folder(stage: Path, synthetic: pd.DataFrame, manifest: dict[str, Any], report_dir: Path | None, stamp: str) -> None:
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
    full.update(
        {
            "release": stamp,
            "created_utc": datetime.now(timezone.utc).isoformat(),
            "rows": int(len(synthetic)),
            "files": {str(p.relative_to(stage)): sha256(p) for p in files},
        }
    )
    (stage / "manifest.json").write_text(json.dumps(full, indent=2, default=str))


INCOMING = ".incoming"


def _landing(root: Path) -> Path:
    """A fresh private folder under `<root>/.incoming/`, named after this process, after
    removing the folders of writers on this host that no longer run (killed mid-write)."""
    incoming = root / INCOMING
    host = socket.gethostname()
    if incoming.is_dir():
        for old in incoming.iterdir():
            pid, _, rest = old.name.partition("@")
            if pid.isdigit() and rest.partition("@")[0] == host and not _alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
    for attempt in range(5):
        incoming.mkdir(parents=True, exist_ok=True)
        try:
            return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}@{host}@", dir=incoming))
        except FileNotFoundError:  # another writer removed the empty .incoming just now
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def verify_release(path: str | Path) -> list[str]:
    """Files whose SHA-256 no longer matches the manifest (empty list: the release verifies)."""
    path = Path(path)
    manifest = json.loads((path / "manifest.json").read_text())
    return [f for f, digest in manifest["files"].items() if not (path / f).exists() or sha256(path / f) != digest]
