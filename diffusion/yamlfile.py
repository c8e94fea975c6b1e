"""Reading a small YAML settings file (a source, a mapping) with one-paragraph errors that never quote its text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from diffusion.errors import InputError


def read_yaml(path: Path, what: str, error: type[InputError]) -> Any:
    """The parsed YAML at `path`; `error("<what> <path> does not exist." / "... is not valid YAML (...)")` otherwise."""
    if not path.is_file():
        raise error(f"{what} {path} does not exist.")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:  # the parser's message can quote the file's lines
        raise error(f"{what} {path} is not valid YAML ({type(exc).__name__}).") from None
