"""Stage predict: evaluation feature store + head -> full-size uint8 PNG saliency maps of the head and
of every bipartition baseline (data/predictions/<dataset>/<method>/<stem>.png)."""
from __future__ import annotations

import hashlib
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import click
import torch
from tqdm import tqdm

from pipeline.bipartition import METHODS
from pipeline.files import fingerprinted_dir
from pipeline.head import load_head
from pipeline.maps import save_png
from pipeline.pseudo import saliency_maps
from pipeline.store import FeatureStore
from stages.common import load_params, one_line_errors, params_option
from stages.pseudo_masks import pseudo_config

MAP_METHODS = (*METHODS, "head")
_STATE: dict = {}


def _init(store_path: str, head_path: str, threads: int) -> None:
    torch.set_num_threads(threads)
    _STATE.update(store=FeatureStore(store_path), head=load_head(head_path))


def _chunk(indices: list[int], cfg: dict, out: str) -> int:
    store, head = _STATE["store"], _STATE["head"]
    sizes = store.sizes()
    for i in indices:
        maps = saliency_maps(store.features(i), store.cls(i), sizes[i], head, **cfg)
        for m in MAP_METHODS:
            save_png(maps[m], Path(out) / m / f"{store.stems[i]}.png")
    return len(indices)


def _done(out: Path, stem: str) -> bool:
    return all((out / m / f"{stem}.png").exists() for m in MAP_METHODS)


@click.command("predict")
@params_option
@click.option("--features", type=click.Path(exists=True, path_type=Path), required=True, help="Evaluation store.")
@click.option("--head", "head_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Prediction directory.")
@one_line_errors
def predict(params_path: Path, features: Path, head_path: Path, out: Path) -> None:
    """Saliency maps at each image's original size (bilinear, method-spec "Inference"); resumable."""
    p = load_params(params_path)
    cfg, pp = pseudo_config(p), p["predict"]
    store = FeatureStore(features)
    load_head(head_path)  # a bad head file fails here, with one line, before any work
    key = json.dumps([cfg, store.attrs["fingerprint"], hashlib.sha256(head_path.read_bytes()).hexdigest()],
                     sort_keys=True)
    out = fingerprinted_dir(out, hashlib.sha256(key.encode()).hexdigest())
    for m in MAP_METHODS:
        (out / m).mkdir(exist_ok=True)
    todo = [i for i, s in enumerate(store.stems) if not _done(out, s)]
    chunks = [todo[s:s + pp["chunk_size"]] for s in range(0, len(todo), pp["chunk_size"])]
    workers = max(1, min(pp["workers"], len(chunks)))
    bar = tqdm(total=len(store), initial=len(store) - len(todo), desc=f"predict {out.name}", unit="img")
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init, initargs=(str(features), str(head_path), 1)) as pool:
        for job in as_completed([pool.submit(_chunk, c, cfg, str(out)) for c in chunks]):
            bar.update(job.result())
    bar.close()
    click.echo(f"{out}: {len(store)} images x {len(MAP_METHODS)} methods ({len(todo)} computed now)")
