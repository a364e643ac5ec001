"""Feature extraction: images -> frozen backbone -> sharded feature store.

Decoding and resizing run in a thread pool ahead of the forward pass, and each finished shard is
written by a background thread while the next one is computed, so on a GPU the store keeps up
with the model. Under torchrun every rank writes its own whole shards (:func:`shards_for_rank`).
"""
from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice

import numpy as np
import torch
from tqdm import tqdm

from pipeline.core import timing
from pipeline.core.datasets import Sample, load_image
from pipeline.core.params import CompressorParams
from pipeline.features.backbone import Backbone, BackboneInfo, preprocess
from pipeline.features.store import StoreSpec, StoreWriter, shards_for_rank
from pipeline.features.views import View


def make_spec(samples: list[Sample], backbone: BackboneInfo, view: View, images_per_shard: int,
              compressor: CompressorParams, model_dtype: str) -> StoreSpec:
    g = backbone.grid(view.resolution)
    return StoreSpec(tuple(s.stem for s in samples), (g, g), backbone.hidden_size, backbone.name,
                     view.resolution, backbone.patch_size, model_dtype, images_per_shard, compressor, view.hflip,
                     backbone.features)


def _load(sample: Sample, view: View) -> tuple[np.ndarray, tuple[int, int]]:
    image = load_image(sample.image)
    return preprocess(image, *view), image.shape[:2]


def _batches(samples: list[Sample], indices: list[int], view: View, batch_size: int,
             pool: ThreadPoolExecutor) -> Iterator[tuple[torch.Tensor, list[tuple[int, int]]]]:
    """Decoded, preprocessed batches; the pool works at most two batches ahead (bounded memory)."""
    window: deque[Future] = deque()
    ahead = iter(indices)
    for i in islice(ahead, 2 * batch_size):
        window.append(pool.submit(_load, samples[i], view))
    while window:
        loaded = [window.popleft().result() for _ in range(min(batch_size, len(window)))]
        for i in islice(ahead, len(loaded)):
            window.append(pool.submit(_load, samples[i], view))
        yield torch.from_numpy(np.stack([x for x, _ in loaded])), [hw for _, hw in loaded]


def encode(samples: list[Sample], indices: list[int], backbone: Backbone, view: View, batch_size: int,
           pool: ThreadPoolExecutor) -> Iterator[tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]]:
    """Float16 patch features (b, h, w, d) and CLS tokens (b, d) of ``indices`` in ``view``, batch by batch in
    order, with each image's original (height, width). The store holds exactly these arrays, so a map
    made from them equals the map made from the store."""
    for pixels, hw in _batches(samples, indices, view, batch_size, pool):
        with timing.section("forward"):  # the model and the copy to host memory
            out = forward_f16(backbone, pixels)
        yield *out, hw


def forward_f16(backbone: Backbone, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A batch of preprocessed images -> float16 patch features (b, h, w, d) and CLS tokens (b, d) on the
    host: the arrays the store keeps (the :class:`~pipeline.head.segmenter.Segmenter` computes them the same way)."""
    patches, cls_tokens = backbone(pixels)
    return patches.float().cpu().numpy().astype(np.float16), cls_tokens.float().cpu().numpy().astype(np.float16)


class Deferred:
    """A backbone loaded by ``load()`` when first needed, once: extraction asks for it only when a shard is to
    be written, so a complete store costs no model load."""

    def __init__(self, load: Callable[[], Backbone]):
        self.load = load

    @functools.cached_property
    def backbone(self) -> Backbone:
        return self.load()


def extract_shards(samples: list[Sample], backbone: Backbone | Deferred, writer: StoreWriter, shards: list[int], *,
                   batch_size: int = 8, workers: int = 4, progress: bool = True, label: str | None = None) -> int:
    """Compute and write the given shards that are not done yet; returns how many were written."""
    spec = writer.spec
    todo = writer.pending_shards(shards)
    if todo and isinstance(backbone, Deferred):
        backbone = backbone.backbone
    bar = tqdm(total=sum(len(spec.shard_range(k)) for k in todo), unit="img", disable=not progress,
               desc=f"extract {label or writer.path.name}")
    pending: Future | None = None
    with ThreadPoolExecutor(workers) as loaders, ThreadPoolExecutor(1) as saver:
        for k in todo:
            idx = list(spec.shard_range(k))
            feats, cls, sizes = [], [], []
            for f, c, hw in encode(samples, idx, backbone, View(spec.resolution, spec.hflip), batch_size, loaders):
                feats.append(f)
                cls.append(c)
                sizes.extend(hw)
                bar.update(len(hw))
            if pending is not None:
                pending.result()  # at most one shard in flight: bounded memory, errors surface
            pending = saver.submit(writer.write_shard, k, np.concatenate(feats), np.concatenate(cls),
                                   np.asarray(sizes))
        if pending is not None:
            pending.result()
    bar.close()
    return len(todo)


def extract_dataset(samples: list[Sample], backbone: Backbone | Deferred, path, spec: StoreSpec, *,
                    rank: int = 0, world_size: int = 1, barrier: Callable[[], None] = lambda: None,
                    **kwargs) -> int:
    """Create or resume the store at ``path``; rank 0 creates and finalises, every rank writes its shards."""
    if rank == 0:
        StoreWriter(path, spec, create=True)
    barrier()
    writer = StoreWriter(path, spec, create=False)
    written = extract_shards(samples, backbone, writer, shards_for_rank(spec.n_shards, rank, world_size),
                             progress=kwargs.pop("progress", rank == 0), **kwargs)
    barrier()
    if rank == 0:
        writer.finalize()
    return written
