"""Inference views of an evaluation set (docs/results.md "Beyond the paper"): the input resolutions the head
sees, each optionally also mirrored. The first view is the paper's single one; it is stored in the
set's own feature store, every other view in a store of its own under ``<set>.views/``."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from pipeline.core.params import EvalSet


class View(NamedTuple):
    resolution: int
    hflip: bool = False

    @property
    def name(self) -> str:
        """Store name of the view: ``756``, ``756-hflip``."""
        return f"{self.resolution}{'-hflip' if self.hflip else ''}"


def views_folder(base_store: Path) -> Path:
    """Where the views other than the base one are stored: ``<set>.views/`` beside ``<set>.zarr``."""
    return base_store.parent / f"{base_store.stem}.views"


def view_store(folder: Path, view: View) -> Path:
    """The store of a non-base ``view`` in its folder: ``<folder>/756-hflip.zarr``."""
    return folder / f"{view.name}.zarr"


def views(resolutions: list[int], hflip: bool) -> list[View]:
    """Each resolution's view, followed by its mirror when ``hflip``; ``[0]`` is the base view."""
    return [View(r, f) for r in resolutions for f in ((False, True) if hflip else (False,))]


def set_views(spec: EvalSet, resolutions: list[int], hflip: bool) -> list[View]:
    """An evaluation set's views: :func:`views` of its own resolution when it has one, else of
    ``resolutions`` (``predict.resolutions``); ``hflip`` is ``predict.hflip``. ``[0]`` is the base view,
    the one the bipartition baselines and the paper's single-scale head use."""
    return views([spec.resolution] if spec.resolution else resolutions, hflip)
