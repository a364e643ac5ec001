"""Sharded Zarr v3 feature store: one store per (dataset, backbone, resolution).

Layout of ``<name>.zarr``:
  features   (n, h*w, d) float16, chunk = one image, shard = ``images_per_shard`` images
  cls        (n, d)      float16, same sharding along n (CLS tokens, for the CLS baseline)
  sizes      (n, 2)      int32, original (height, width) of each image
  shard_crc  (n_shards, 3) uint32: CRC-32 of the shard's features, cls and sizes files, taken when written
  shard_done (n_shards,) uint8, one chunk per shard: 1 once that shard's data is fully written
Attributes: stems, backbone, resolution, grid, patch size, dtypes, codec, library versions, and
``complete`` (set last, after every shard is done).

Resumability: a shard is buffered in memory and written once (whole-shard writes are ~15x faster
than per-image writes into a shard), then marked done. Zarr's local store writes each file to a
temporary name and renames it, so a killed process leaves whole old files or whole new ones. A
restart with the same fingerprint rewrites exactly the shards not marked done; readers refuse a
store without ``complete``. Each writer process owns whole shards (concurrent writers into one shard
lose data silently), see :func:`shards_for_rank`.
"""
from __future__ import annotations

import errno
import hashlib
import importlib.metadata as md
import json
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from pipeline.core.errors import PipelineError
from pipeline.core.params import CompressorParams

FORMAT_VERSION = 2     # 2: per-shard checksums
DATA_ARRAYS = ("features", "cls", "sizes")


class StoreError(PipelineError):
    pass


def codecs(c: CompressorParams) -> list:
    """Compressor from params (``store.compressor``): blosc (``cname`` + byte shuffle), zstd, or none."""
    if c.name == "none":
        return []
    if c.name == "blosc":
        return [BloscCodec(cname=c.cname, clevel=c.clevel, shuffle="shuffle")]
    return [ZstdCodec(level=c.clevel)]


def shards_for_rank(n_shards: int, rank: int, world_size: int) -> list[int]:
    """Shards a rank writes: round-robin, so ranks own disjoint whole shards and share the work."""
    return list(range(rank, n_shards, world_size))


def library_versions() -> dict[str, str]:
    return {p: md.version(p) for p in ("torch", "transformers", "zarr", "numpy")}


@dataclass(frozen=True)
class StoreSpec:
    """Everything that determines a store's content; a store with another spec is rebuilt."""

    stems: tuple[str, ...]
    grid: tuple[int, int]
    dim: int
    backbone: str
    resolution: int
    patch_size: int
    model_dtype: str
    images_per_shard: int
    compressor: CompressorParams
    hflip: bool = False   # features of the mirrored images (an inference view)
    features: str = "tokens"  # backbone.features: the last layer's tokens or its attention keys

    @property
    def n_shards(self) -> int:
        return -(-len(self.stems) // self.images_per_shard)

    def shard_range(self, k: int) -> range:
        return range(k * self.images_per_shard, min((k + 1) * self.images_per_shard, len(self.stems)))

    def fingerprint(self) -> str:
        blob = json.dumps(
            [FORMAT_VERSION, self.stems, self.grid, self.dim, self.backbone, self.resolution,
             self.patch_size, self.model_dtype, self.images_per_shard, self.compressor.model_dump(),
             *(["hflip"] if self.hflip else []),  # unmirrored stores keep the fingerprint they always had
             *(["keys"] if self.features == "keys" else [])],  # and so do stores of tokens
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()


def check_store_path(path: Path) -> dict:
    """Attributes of the feature store at ``path`` ({} when absent or an empty folder); raise StoreError for
    anything else there, which is never overwritten (cheap: run it before loading a model)."""
    path = Path(path)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return {}
    try:
        attrs = dict(zarr.open_group(path, mode="r").attrs)
    except Exception:
        attrs = {}
    if "format_version" not in attrs:
        raise StoreError(f"{path}: exists and is not a selfment feature store; nothing was changed "
                         f"(move it away or choose another output path)")
    return attrs


def _shard_files(root: zarr.Group, path: Path, k: int) -> list[Path]:
    """The files of shard ``k``, one per data array (:data:`DATA_ARRAYS`)."""
    return [path / name / root[name].metadata.encode_chunk_key((k,) + (0,) * (root[name].ndim - 1))
            for name in DATA_ARRAYS]


def _present(root: zarr.Group, path: Path, k: int) -> bool:
    return all(f.is_file() for f in _shard_files(root, path, k))


def _crc(file: Path) -> int:
    crc = 0
    with open(file, "rb") as f:
        while block := f.read(1 << 24):
            crc = zlib.crc32(block, crc)
    return crc


def _damaged(root: zarr.Group, path: Path, k: int, which: tuple[int, ...] = (0, 1, 2)) -> Path | None:
    """The first file of shard ``k`` (of the arrays ``which``) that is missing or differs from the checksum
    taken when it was written (a truncated copy, flipped bits); None when they are intact."""
    files, crcs = _shard_files(root, path, k), root["shard_crc"][k]
    return next((files[j] for j in which if not files[j].is_file() or _crc(files[j]) != crcs[j]), None)


class StoreWriter:
    """Creates (or resumes) a store and writes whole shards."""

    def __init__(self, path: Path | str, spec: StoreSpec, create: bool = True):
        self.path, self.spec = Path(path), spec
        if create:
            self._create_or_resume()
        self.root = zarr.open_group(self.path, mode="r+")

    def _create_or_resume(self) -> None:
        attrs = check_store_path(self.path)
        if attrs.get("fingerprint") == self.spec.fingerprint():
            return
        if attrs:  # a store this project wrote with other settings: rebuilt
            shutil.rmtree(self.path)
        s = self.spec
        n, hw = len(s.stems), s.grid[0] * s.grid[1]
        # format_version first: a creation cut short is still recognised as this project's (and rebuilt)
        root = zarr.open_group(self.path, mode="w", attributes={"format_version": FORMAT_VERSION})
        comp = codecs(s.compressor)
        ips = s.images_per_shard
        root.create_array("features", shape=(n, hw, s.dim), chunks=(1, hw, s.dim), shards=(ips, hw, s.dim),
                          dtype="float16", compressors=comp, fill_value=0)
        root.create_array("cls", shape=(n, s.dim), chunks=(1, s.dim), shards=(ips, s.dim),
                          dtype="float16", compressors=comp, fill_value=0)
        root.create_array("sizes", shape=(n, 2), chunks=(ips, 2), dtype="int32", fill_value=0)
        root.create_array("shard_crc", shape=(s.n_shards, 3), chunks=(1, 3), dtype="uint32", fill_value=0)
        root.create_array("shard_done", shape=(s.n_shards,), chunks=(1,), dtype="uint8", fill_value=0)
        root.attrs.update({
            "fingerprint": s.fingerprint(),
            "stems": list(s.stems),
            "grid": list(s.grid),
            "dim": s.dim,
            "backbone": s.backbone,
            "resolution": s.resolution,
            "hflip": s.hflip,
            "features": s.features,
            "patch_size": s.patch_size,
            "model_dtype": s.model_dtype,
            "feature_dtype": "float16",
            "images_per_shard": ips,
            "compressor": s.compressor.model_dump(),
            "versions": library_versions(),
            "complete": False,
        })

    def pending_shards(self, shards: list[int], verify: bool = True) -> list[int]:
        """Shards not marked done, or whose files are gone or, with ``verify``, damaged (zarr would read
        zeros or garbage): every done shard is then read once to check it (docs/params.md "Faults"). Without
        ``verify`` (shards this run just wrote, with their checksums) only the files' presence is checked."""
        done = self.root["shard_done"][:]
        if not verify:
            return [k for k in shards if not (done[k] and _present(self.root, self.path, k))]
        return [k for k in shards if not (done[k] and _damaged(self.root, self.path, k) is None)]

    def write_shard(self, k: int, features: np.ndarray, cls: np.ndarray, sizes: np.ndarray) -> None:
        """Write shard ``k`` in one go ((n_k, h, w, d) features), then mark it done."""
        r = self.spec.shard_range(k)
        if features.shape[0] != len(r):
            raise StoreError(f"{self.path}: shard {k} needs {len(r)} images, got {features.shape[0]}")
        if not np.isfinite(features).all():
            raise StoreError(f"{self.path}: shard {k} has non-finite features (float16 overflow?)")
        for f in _shard_files(self.root, self.path, k):  # rewritten whole: never merged into a damaged file
            f.unlink(missing_ok=True)
        try:
            with zarr.config.set({"array.write_empty_chunks": True}):  # every shard has its files, even all zeros
                self.root["features"][r.start:r.stop] = features.reshape(len(r), -1, self.spec.dim).astype(np.float16)
                self.root["cls"][r.start:r.stop] = cls.astype(np.float16)
                self.root["sizes"][r.start:r.stop] = sizes.astype(np.int32)
            self.root["shard_crc"][k] = [_crc(f) for f in _shard_files(self.root, self.path, k)]
            self.root["shard_done"][k] = 1
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            left = sum(len(self.spec.shard_range(j)) for j in self.pending_shards(list(range(self.spec.n_shards)), False))
            need = left * (self.spec.grid[0] * self.spec.grid[1] + 1) * self.spec.dim * 2  # raw float16: an upper bound
            raise StoreError(f"{self.path}: disk full writing shard {k} (images {r.start}-{r.stop - 1}): "
                             f"{shutil.disk_usage(self.path).free / 1e9:.2f} GB free, up to {need / 1e9:.2f} GB more "
                             f"needed for the {left} images not written; free space and run extract again "
                             f"(finished shards are kept)") from None

    def finalize(self) -> None:
        """Mark the store complete if (and only if) every shard is done."""
        missing = self.pending_shards(list(range(self.spec.n_shards)), verify=False)  # checked at the start
        if missing:
            raise StoreError(f"{self.path}: shards {missing} are not written; run extract again to resume")
        if not self.root.attrs.get("complete"):  # a complete store is left as it is (its files may be linked)
            self.root.attrs["complete"] = True


class FeatureStore:
    """Read-only view of a complete store."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        try:
            self.root = zarr.open_group(self.path, mode="r")
        except Exception:
            raise StoreError(f"{self.path}: not a feature store (run the extract stage)") from None
        self.attrs = dict(self.root.attrs)
        if not self.attrs.get("complete"):
            raise StoreError(f"{self.path}: feature store is incomplete (an interrupted extract); run extract again")
        if self.attrs.get("format_version") != FORMAT_VERSION:
            raise StoreError(f"{self.path}: written by another version of selfment (format "
                             f"{self.attrs.get('format_version')}, now {FORMAT_VERSION}); run extract again to rebuild it")
        self.stems: list[str] = list(self.attrs["stems"])
        self.ips = int(self.attrs["images_per_shard"])
        self.n_shards = -(-len(self.stems) // self.ips)
        gone = [k for k in range(self.n_shards) if not _present(self.root, self.path, k)]
        if gone:
            raise StoreError(f"{self.path}: files of {len(gone)} shard(s) are missing (first: images "
                             f"{self._images(gone[0])}); run extract again to rewrite them")
        self.grid: tuple[int, int] = tuple(self.attrs["grid"])
        self.dim: int = int(self.attrs["dim"])
        self._features = self.root["features"]
        self._cls: np.ndarray | None = None
        self._checked: set[tuple[int, int]] = set()

    def _images(self, k: int) -> str:
        return f"{k * self.ips}-{min((k + 1) * self.ips, len(self.stems)) - 1}"

    def _check(self, k: int, array: int) -> None:
        """Stop before any use of damaged data: shard ``k``'s file of ``DATA_ARRAYS[array]`` is checked
        against its write-time CRC the first time this process reads it."""
        if (k, array) in self._checked:
            return
        bad = _damaged(self.root, self.path, k, (array,))
        if bad is not None:
            raise StoreError(f"{self.path}: shard {k} (images {self._images(k)}) is damaged ({bad.relative_to(self.path)} "
                             f"differs from its checksum); run extract again to rewrite it")
        self._checked.add((k, array))

    def __len__(self) -> int:
        return len(self.stems)

    def features(self, i: int) -> np.ndarray:
        """(h, w, d) float16 patch features of image ``i``."""
        self._check(i // self.ips, 0)
        return self._features[i].reshape(*self.grid, self.dim)

    def cls(self, i: int) -> np.ndarray:
        """(d,) float16 CLS token of image ``i`` (all of them are read at the first call: n x d is small)."""
        if self._cls is None:
            for k in range(self.n_shards):
                self._check(k, 1)
            self._cls = self.root["cls"][:]
        return self._cls[i]

    def sizes(self) -> np.ndarray:
        """(n, 2) original (height, width) of every image."""
        for k in range(self.n_shards):
            self._check(k, 2)
        return self.root["sizes"][:]
