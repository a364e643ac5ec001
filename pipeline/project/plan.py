"""What a run will extract and hold on disk, computed from params alone before any forward (docs/data.md "Disk").

Store sizes follow the store layout (:mod:`pipeline.features.store`): float16 features (h*w x d) and CLS token (d)
per image, compressed by the codec's ratio on real features (:data:`CODEC_RATIO`), plus the shard
indices and the JSON metadata (the stems are in the root's attributes).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.core import datasets
from pipeline.core.params import CompressorParams, DatasetSpec, Params
from pipeline.features.backbone import BackboneInfo
from pipeline.features.views import View, set_views

# Stored / raw bytes of float16 features per codec, DINOv2 ViT-S/14 at 756 px on DUTS-TR (docs/benchmarks.md
# "Feature extraction"); features of random weights compress better (a ratio is an estimate, not a bound).
CODEC_RATIO = {"none": 1.0, "blosc-lz4": 0.976, "blosc-zstd": 0.898, "zstd": 0.917}
# Image counts of the benchmarks' official releases, for a plan made before the data is downloaded.
PUBLISHED_SIZES = {"DUTS-TR": 10553, "DUTS-TE": 5019, "ECSSD": 1000, "HKU-IS": 4447, "PASCAL-S": 850,
                   "DUT-OMRON": 5168, "SOD": 300, "CHAMELEON": 76, "CAMO": 250, "COD10K": 2026, "NC4K": 4121}
# Token layouts of the hub backbones the presets name (patch size, CLS + registers, width), for a plan
# made where their config cannot be fetched.
KNOWN_LAYOUTS = {"facebook/dinov3-vit7b16-pretrain-lvd1689m": (16, 5, 4096),
                 "facebook/dinov3-vits16-pretrain-lvd1689m": (16, 5, 384),
                 "facebook/dinov2-small": (14, 1, 384), "facebook/dinov2-base": (14, 1, 768)}
ARRAY_METADATA = 4339   # the five arrays' zarr.json files (features, cls, sizes, shard_crc, shard_done)
ROOT_METADATA = 1150    # the root zarr.json without its stems
STEM_OVERHEAD = 8       # per stem in the root zarr.json: quotes, comma, newline, indentation
GUESSED_STEM = 12       # characters per stem when the dataset is not there yet


@dataclass(frozen=True)
class StorePlan:
    path: str
    images: int
    view: View
    grid: int
    dim: int
    bytes: int
    source: str       # where the image count comes from: "" (counted on disk), "published", "demo"


def codec_key(c: CompressorParams) -> str:
    return "blosc-" + c.cname if c.name == "blosc" else c.name


def store_bytes(n: int, grid: int, dim: int, images_per_shard: int, compressor: CompressorParams,
                stem_chars: int) -> int:
    """Bytes on disk of a store of ``n`` images of ``grid`` x ``grid`` tokens of width ``dim``."""
    shards = -(-n // images_per_shard)
    data = 2 * n * dim * (grid * grid * CODEC_RATIO[codec_key(compressor)] + 1)  # features + CLS
    index = 2 * (16 * n + 4 * shards)   # features' and CLS' shard indices: (offset, length) per image + crc
    blosc = 16 * 2 * n if compressor.name == "blosc" else 0  # a blosc header per image and array
    return round(data + index + blosc + 41 * shards + ARRAY_METADATA + ROOT_METADATA
                 + stem_chars + STEM_OVERHEAD * n)


def plan_stores(p: Params, info: BackboneInfo, counts: dict[str, tuple[int, int | None, str]]) -> list[StorePlan]:
    """Every store of the run (0 bytes for evaluation views without a feature cache): ``counts`` maps "train" and each eval set to (images, characters of all
    their stems or None where they are not on disk yet, source of the count)."""
    out = []

    def add(path: str, key: str, view: View) -> None:
        n, chars, source = counts[key]
        g = info.grid(view.resolution)
        size = store_bytes(n, g, info.hidden_size, p.store.images_per_shard, p.store.compressor,
                           chars if chars is not None else GUESSED_STEM * n)
        if key != "train" and not p.predict.cache_features:
            size = 0  # predict forwards the images itself (docs/data.md "Disk")
        out.append(StorePlan(path, n, view, g, info.hidden_size, size, source))

    add("data/features/train.zarr", "train", View(p.backbone.resolution))
    for name, spec in p.data.eval.items():
        base, *extra = set_views(spec, p.predict.resolutions, p.predict.hflip)
        add(f"data/features/eval/{name}.zarr", name, base)
        for v in extra:
            add(f"data/features/eval/{name}.views/{v.name}.zarr", name, v)
    return out


def _count_set(p: Params, spec: DatasetSpec, first: int | None = None) -> tuple[int, int | None, str]:
    """(images, characters of their stems) on disk; a demo set not written yet: its size; else the
    benchmark's published size (stems unknown)."""
    try:
        stems = [s.stem for s in datasets.resolve(spec)][:first]
        return len(stems), stem_chars(stems), ""
    except datasets.DatasetError:
        if Path(spec.root).parent == Path("data") and Path(spec.root).name in p.demo.write:
            return min(p.demo.n_images, first or p.demo.n_images), None, "demo"
        if spec.preset not in PUBLISHED_SIZES:
            raise
        return min(PUBLISHED_SIZES[spec.preset], first or PUBLISHED_SIZES[spec.preset]), None, "published"


def count_images(p: Params) -> dict[str, tuple[int, int | None, str]]:
    """Images of the training sample and of each evaluation set, as :func:`plan_stores` takes them."""
    n, chars, source = _count_set(p, p.data.train.dataset)
    share = min(1.0, p.data.train.sample_size / n)  # the sample's stems: their mean length
    counts = {"train": (min(n, p.data.train.sample_size), chars and round(chars * share), source)}
    return counts | {name: _count_set(p, spec, spec.first) for name, spec in p.data.eval.items()}


def _gb(b: float) -> str:
    return f"{b / 1e9:.2f} GB" if b >= 1e8 else f"{b / 1e6:.1f} MB"


def largest_allocations(p: Params, info: BackboneInfo, stores: list[StorePlan]) -> list[tuple[str, int]]:
    """The biggest single arrays of the run: NCut's N x N float32 affinity at the largest grid it runs on
    (training resolution, each set's base view) and one image's float32 features at the largest view."""
    ncut_views = [View(p.backbone.resolution)] + [set_views(s, p.predict.resolutions, False)[0]
                                                  for s in p.data.eval.values()]
    r = max(v.resolution for v in ncut_views)
    n = info.grid(r) ** 2
    top = max(stores, key=lambda s: s.grid)
    return [(f"NCut affinity at {r} px (N = {n} patches, float32 N x N; the dense fallback needs ~3 float64 "
             f"copies: {_gb(3 * 8 * n * n)})", 4 * n * n),
            (f"one image's features at {top.view.resolution} px ({top.grid ** 2} tokens x {top.dim}, float32)",
             4 * top.grid ** 2 * top.dim)]


def render(p: Params, info: BackboneInfo, stores: list[StorePlan]) -> str:
    """The plan as Markdown: one row per store, the totals, the largest allocations."""
    lines = [f"backbone {info.name}: patch {info.patch_size}, width {info.hidden_size}; store codec "
             f"{codec_key(p.store.compressor)} (x{CODEC_RATIO[codec_key(p.store.compressor)]} of raw float16)", "",
             "| store | images | view | tokens / image | forwards | MB / image | size |", "|---|---|---|---|---|---|---|"]
    for s in stores:
        view = f"{s.view.resolution} px" + (" mirrored" if s.view.hflip else "")
        lines.append(f"| {s.path} | {s.images}{f' ({s.source})' if s.source else ''} | {view} | {s.grid ** 2} | "
                     f"{s.images} | {s.bytes / s.images / 1e6:.2f} | {_gb(s.bytes) if s.bytes else 'no store'} |")
    total, forwards = sum(s.bytes for s in stores), sum(s.images for s in stores)
    lines += [f"| **all stores** | | | | **{forwards}** | | **{_gb(total)}** |", "",
              f"On disk: {_gb(total)} once (stores are DVC outputs without cache); DVC's default cache would "
              f"hold a second copy ({_gb(2 * total)} in all).", "Largest single allocations:"]
    lines += [f"- {what}: {_gb(b)}" for what, b in largest_allocations(p, info, stores)]
    return "\n".join(lines)


def known_info(name: str) -> BackboneInfo | None:
    """The layout of a preset's hub backbone without its config (None for other names)."""
    if name not in KNOWN_LAYOUTS:
        return None
    patch, prefix, width = KNOWN_LAYOUTS[name]
    return BackboneInfo(name, patch, prefix, width)


def stem_chars(stems: list[str]) -> int:
    """Characters the stems take in the root's JSON attributes (non-ASCII escaped as JSON does)."""
    return sum(len(json.dumps(s)) for s in stems)
