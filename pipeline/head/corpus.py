"""The inputs of ``selfment segment`` at corpus scale (docs/own-images.md "A corpus"): image files, folder
trees, glob patterns and list files of millions of paths, streamed into one list of (path, output name) lines
with byte offsets per work unit, so memory holds one unit whatever the corpus's size.

Output names keep each image's path relative to where it was found (the folder given, a glob's fixed
prefix, a list file's folder), so equal file names in different folders never collide, and can never leave
the output folder whatever a list holds: paths are normalised lexically (``..`` resolved, links not
followed), and one outside its root is named by its absolute path under ``_outside/``.
"""
from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.runner import Unit

IMAGES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"}
OUTSIDE = "_outside"


def output_name(path: str | Path, root: str | Path) -> PurePosixPath:
    """The map's name relative to the output folder: ``path`` relative to ``root`` with the suffix ``.png``;
    a path outside ``root`` becomes ``_outside/<its absolute path>``. Lexical only: never outside."""
    norm, base = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(root))
    rel = os.path.relpath(norm, base)
    parts = PurePosixPath(*Path(rel).parts) if not rel.startswith("..") else PurePosixPath(OUTSIDE, *Path(norm).parts[1:])
    return parts.with_suffix(".png")


def _items(inputs: list[str], list_file: Path | None) -> Iterator[tuple[str, PurePosixPath]]:
    """(path, output name) of every input image, streamed, in a stable order."""
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for folder, dirs, files in os.walk(p):
                dirs.sort()
                for f in sorted(files):
                    if Path(f).suffix.lower() in IMAGES:
                        yield os.path.join(folder, f), output_name(os.path.join(folder, f), p)
        elif glob.has_magic(item):  # names relative to the pattern's fixed prefix (photos/**/*.jpg: photos)
            parts = Path(item).parts
            prefix = Path(*parts[:next(k for k, part in enumerate(parts) if glob.has_magic(part))] or ["."])
            for f in sorted(glob.iglob(item, recursive=True)):
                if Path(f).is_file():
                    yield f, output_name(f, prefix)
        else:
            yield item, PurePosixPath(Path(item).name).with_suffix(".png")
    if list_file is not None:
        with open(list_file, encoding="utf-8") as lines:
            for line in lines:
                path = line.rstrip("\n")
                if path.strip():
                    full = path if os.path.isabs(path) else os.path.join(list_file.parent, path)
                    yield full, output_name(full, list_file.parent)


def write_list(inputs: list[str], list_file: Path | None, out: Path, unit: int) -> tuple[int, np.ndarray]:
    """Write every input as a ``path<TAB>output name`` line to ``out``; returns the count and the byte offset
    of every ``unit``-th line (where each work unit starts). A path holding a tab or a newline is refused."""
    offsets, n = [], 0
    with open(out, "w", encoding="utf-8") as f:
        for path, name in _items(inputs, list_file):
            if "\t" in path or "\n" in path:
                raise PipelineError(f"{path!r}: a path with a tab or a newline cannot be listed; rename it")
            if n % unit == 0:
                offsets.append(f.tell())
            f.write(f"{path}\t{name}\n")
            n += 1
    return n, np.array(offsets, dtype=np.int64)


def read_unit(listing: Path, offset: int, count: int) -> list[tuple[str, str]]:
    """The (path, output name) lines of one unit."""
    with open(listing, encoding="utf-8") as f:
        f.seek(offset)
        return [tuple(f.readline().rstrip("\n").split("\t")) for _ in range(count)]


def repeated(listing: Path) -> set[int]:
    """Line numbers whose output name an earlier line already has (the later ones: the first is kept), from
    64-bit hashes of the names (8 bytes per line in memory)."""
    with open(listing, encoding="utf-8") as f:
        h = np.array([int.from_bytes(hashlib.blake2b(line.rstrip("\n").split("\t")[1].encode(), digest_size=8).digest(),
                                     "little") for line in f], dtype=np.uint64)
    order = np.argsort(h, kind="stable")
    same = np.flatnonzero(h[order][1:] == h[order][:-1]) + 1
    return {int(order[k]) for k in same}


class Batches(Sequence):
    """The work units of a listing, made on demand: unit k is lines k*size .. of the listing, args (byte offset,
    first line, count). Slicing gives a view (ranks take ``units[rank::world]``), so memory holds the offsets
    (8 bytes a unit), not a unit object each."""

    def __init__(self, offsets: np.ndarray, n: int, size: int, index: range | None = None):
        self.offsets, self.n, self.size = offsets, n, size
        self.index = range(len(offsets)) if index is None else index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return Batches(self.offsets, self.n, self.size, self.index[k])
        k = self.index[k]
        count = min(self.size, self.n - k * self.size)
        return Unit(f"{k:09d}", (int(self.offsets[k]), k * self.size, count), count)
