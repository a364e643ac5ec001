"""Crash-safe file writes: an interrupted stage never leaves a half-written output."""
from __future__ import annotations

import json
from pathlib import Path


def atomic_write(path: Path, write) -> None:
    """``write(binary file)`` into a temporary sibling, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
    tmp.replace(path)


def write_json(path: Path, data) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2, sort_keys=False) + "\n").encode()))
