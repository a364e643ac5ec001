"""Each bipartition method's patch-grid masks of one set of images, kept in ``<folder>/<method>.npz`` and
keyed by exactly the inputs the method reads besides the features (paper Sec. 3.1-3.2): NCut ``ncut.*``;
NCut + IPO ``ncut.*`` and ``ipo.*`` (IPO starts from NCut's mask); CLS nothing more; k-means
``pseudo.kmeans_seed``. So an ``ipo.*`` experiment runs IPO from the kept NCut masks and solves no
eigenproblem, an ``ncut.*`` one reruns NCut and IPO, and a head or loss experiment none of them
(docs/experiments.md "What an experiment recomputes")."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from pipeline.core.files import save_npz
from pipeline.core.params import METHODS, IPOParams, NCutParams
from pipeline.core.runner import fingerprint

READS = {"cls": (), "kmeans": ("kmeans_seed",), "ncut": ("ncut",), "ncut_ipo": ("ncut", "ipo")}
COUNTERS = {"ncut": "ncut_solved", "ncut_ipo": "ipo_run", "cls": "cls_run", "kmeans": "kmeans_run"}


def method_keys(base: str, ncut_p: NCutParams, ipo_p: IPOParams, kmeans_seed: int) -> dict[str, str]:
    """Each method's key: ``base`` (what every method reads: the features) and the params of :data:`READS`."""
    values = {"ncut": ncut_p, "ipo": ipo_p, "kmeans_seed": kmeans_seed}
    return {m: fingerprint(base, m, *(values[r] for r in READS[m])) for m in METHODS}


def load_kept(folder: Path | str, method: str, key: str, stems: list[str]) -> dict[str, np.ndarray] | None:
    """The arrays kept for ``method`` (``masks`` (n, h, w) bool and the method's statistics), or None when
    none are kept for ``key`` and ``stems`` (absent, another key, other images, or an unreadable file)."""
    try:
        with np.load(Path(folder) / f"{method}.npz") as z:
            if str(z["key"]) != key or z["stems"].tolist() != list(stems):
                return None
            return {k: z[k] for k in z.files if k not in ("key", "stems")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def save_kept(folder: Path | str, method: str, key: str, stems: list[str], arrays: dict[str, np.ndarray]) -> None:
    save_npz(Path(folder) / f"{method}.npz", {"key": np.array(key), "stems": np.array(stems, dtype=str), **arrays})


def counters(computed: dict[str, int]) -> dict[str, int]:
    """Images each method was computed for in this run (0: kept), by counter name (:data:`COUNTERS`)."""
    return {COUNTERS[m]: computed.get(m, 0) for m in METHODS}


def split_kept(folder: Path | str, keys: dict[str, str], stems: list[str],
               methods: tuple[str, ...] = METHODS) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """(the kept arrays of each of ``methods`` that has them for its key, the methods to compute)."""
    kept = {m: a for m in methods if (a := load_kept(folder, m, keys[m], stems)) is not None}
    return kept, [m for m in methods if m not in kept]
