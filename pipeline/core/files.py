"""Files shared by the stages: crash-safe writes (an interrupted stage never leaves a half-written
output) and per-image tables read back with their stems as text."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np


def atomic_write(path: Path, write) -> None:
    """``write(binary file)`` into a temporary sibling, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        tmp.replace(path)
    except BaseException as exc:  # a full disk, an interrupt: no half-written temporary is left behind
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a writer's own error names no file: name it
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed``'s format (``np.load`` reads it), written atomically with fixed entry dates:
    the same arrays always give the same bytes, so DVC sees a recomputed but equal result as unchanged."""
    def write(f) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            for name, a in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with z.open(info, "w", force_zip64=True) as entry:
                    np.lib.format.write_array(entry, np.asanyarray(a), allow_pickle=False)

    atomic_write(path, write)


def write_json(path: Path, data) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2, sort_keys=False) + "\n").encode()))


def read_image_table(path: Path):
    """A per-image CSV indexed by its ``stem`` column, each stem exactly as its file names it (``0001``,
    ``223061``, ``NA`` stay text; pandas would read them as numbers or missing values), the other
    columns as numbers."""
    import pandas as pd

    table = pd.read_csv(path, dtype=str, keep_default_na=False).set_index("stem")
    return table.apply(pd.to_numeric, errors="coerce")
