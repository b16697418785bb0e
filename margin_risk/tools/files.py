"""Checks on output paths that commands make before they start long work."""

from __future__ import annotations

import os
from pathlib import Path


def unwritable(path: Path) -> str | None:
    """Why a file cannot be written at ``path`` (its directory is created if missing), or None.

    A demo or a benchmark runs for minutes; finding out at the end that its report cannot be
    written would lose the run."""
    if path.is_dir():
        return "is a directory"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create {path.parent}: {e.strerror or e}"
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return "not writable"
    return None
