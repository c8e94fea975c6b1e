"""Measures that cannot be computed are reported, never raised.

A measure family computed on degenerate data (two patients, one-visit patients, a column no
patient of a fold holds, one label) may fail inside a library it calls. `Unmeasured` runs each
family, keeps what it returns, and on failure records why, under the family's name and the
catalog names it would have produced, so the report, metrics.json and the logs say "not
measurable: <reason>", and a gate that reads it blocks with that reason. Bad input to the
evaluation itself (`InputError`) still raises: it is the caller's to fix.

A reason is the exception's type and message with quoted text and numbers masked, so no
value of a patient reaches a log or a report through an error message.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable

from diffusion.errors import InputError

log = logging.getLogger(__name__)

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?\d+(\.\d+)?([eE][-+]?\d+)?")


def reason(exc: BaseException) -> str:
    """`Type: message`, quoted text and numbers masked, at most 200 characters."""
    text = _NUMBER.sub("#", _QUOTED.sub("'…'", " ".join(str(exc).split())))
    return f"{type(exc).__name__}: {text}"[:200]


class Unmeasured:
    """Why each measure family that failed could not be computed (see the module docstring)."""

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}  # family label -> reason
        self._covers: dict[str, str] = {}  # catalog prefix -> family label

    def run(self, label: str, fn: Callable[..., dict[str, float]], *args: Any, covers: tuple[str, ...] = (), **kwargs: Any):
        """`fn(*args, **kwargs)`, or {} with the reason recorded when it raises."""
        try:
            return fn(*args, **kwargs)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as not measurable; its gate then blocks
            self.reasons[label] = reason(exc)
            for prefix in covers or (label,):
                self._covers[prefix] = label
            log.warning("Not measurable: %s (%s).", label, self.reasons[label])
            return {}

    def why(self, metric: str) -> str | None:
        """The reason a metric is missing, when a failed family would have produced it."""
        for prefix, label in sorted(self._covers.items(), key=lambda kv: -len(kv[0])):
            if metric == prefix or metric.startswith(prefix + "."):
                return f"{label}: {self.reasons[label]}"
        return None

    def to_dict(self) -> dict[str, str]:
        return dict(self.reasons)
