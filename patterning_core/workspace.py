"""The project's working area, and folder names derived from settings.

- :func:`patterning_home`: ``$PATTERNING_HOME`` (default ``./.patterning``), resolved to an
  absolute path. Every cache, run folder, χ store and Prefect's own home live under it.
- :func:`settings_digest`: a short, stable name for a JSON-able settings object (sha256 of
  its canonical JSON, keys sorted). Memoized run folders are named by it, so equal settings
  find the same folder in every process and session.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = ["patterning_home", "settings_digest"]


def patterning_home() -> Path:
    """The project's working area: ``$PATTERNING_HOME``, default ``./.patterning``, absolute."""
    return Path(os.environ.get("PATTERNING_HOME", ".patterning")).resolve()


def settings_digest(settings: object, length: int = 12) -> str:
    """First ``length`` hex digits of sha256 over ``json.dumps(settings, sort_keys=True)``
    (objects JSON cannot write are written with ``str``)."""
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
