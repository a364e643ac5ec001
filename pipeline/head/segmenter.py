"""A trained model that travels (docs/own-images.md "Trained model"): the head and everything its inference needs, as a
Hugging Face model directory (``config.json`` + ``model.safetensors`` + a model card) saved and loaded by
``huggingface_hub``'s :class:`~huggingface_hub.PyTorchModelHubMixin` (``save_pretrained``,
``from_pretrained``, ``push_to_hub``).

The config names the backbone (hub id or directory) and its hub revision when known, the inference views
(resolutions, flip), the mask threshold and the hash of the params the model came from. The backbone's
weights are not in the directory: it is loaded from its own id on the first :meth:`Segmenter.predict`.
Features are computed as extraction computes them (float16, batch by batch in order, one
``preprocess`` per view) and the views fused as in ``predict`` (paper Sec. 3.3 inference, docs/method.md
"Method: inference"), so the maps equal the pipeline's, byte for byte once written as PNG.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import PyTorchModelHubMixin
from PIL import Image, ImageOps
from torch import nn

from pipeline.core import timing
from pipeline.core.datasets import load_photo, rgb_pixels
from pipeline.core.errors import PipelineError
from pipeline.features.backbone import Backbone, load_backbone, preprocess
from pipeline.features.extract import forward_f16
from pipeline.features.views import views
from pipeline.head.model import Head, fuse_views

CARD = """---
{{ card_data }}
---

# Selfment segmenter

Foreground (salient-object) segmentation with the Selfment head (NCut + Iterative Patch Optimization
pseudo-masks, a lightweight head trained on frozen self-supervised ViT features; no human labels) on
`{{ backbone }}` patch features, at {{ resolutions }} px{{ " with mirrored views" if hflip else "" }}; masks
are p > {{ threshold }}. {% if source %}Weights imported from the authors' release: `{{ source }}`.{% else %}Params hash: `{{ params_hash }}`.{% endif %}

```python
from pipeline.head.segmenter import Segmenter        # pip install the selfment project

model = Segmenter.from_pretrained("path/to/this/directory")
[out] = model.predict(["photo.jpg"])            # paths, PIL images or RGB uint8 arrays
out.prob, out.mask                              # float32 (H, W) in [0, 1]; bool (H, W)
```
"""

Photo = str | Path | Image.Image | np.ndarray
MODEL_FILES = ("config.json", "model.safetensors", "README.md")  # a model directory: what save_pretrained writes


@dataclass
class Segmentation:
    prob: np.ndarray        # float32 (H, W) foreground probability at the image's size, as viewers show it
    mask: np.ndarray        # bool (H, W): prob > the model's threshold
    note: str | None = None  # e.g. "3 frames, the first one segmented"


class Segmenter(nn.Module, PyTorchModelHubMixin, library_name="selfment", pipeline_tag="image-segmentation",
                tags=["saliency", "foreground-segmentation", "self-supervised"], model_card_template=CARD):
    """The head (Eq. 9) with its backbone's name, inference views, threshold and provenance."""

    def __init__(self, backbone: str, dim: int, hidden: int = 128, embed: int = 128, n_classes: int = 2,
                 backbone_revision: str | None = None, dtype: str = "float32", features: str = "tokens",
                 resolutions: tuple[int, ...] = (756,),
                 hflip: bool = False, threshold: float = 0.5, params_hash: str | None = None, source: str | None = None):
        super().__init__()
        self.head = Head(dim, hidden, embed, n_classes)
        self.backbone_name, self.backbone_revision, self.dtype, self.features = backbone, backbone_revision, dtype, features
        self.views = views(list(resolutions), hflip)
        self.threshold, self.params_hash, self.source = threshold, params_hash, source
        self._backbone: Backbone | None = None  # loaded on first use, never part of the state dict

    @classmethod
    def from_head(cls, head: Head, **config) -> "Segmenter":
        """A segmenter around a trained :class:`Head` (``config``: the constructor's other arguments)."""
        model = cls(**head.config, **config)
        model.head.load_state_dict(head.state_dict())
        return model.eval()

    @classmethod
    def _from_pretrained(cls, *, strict: bool = True, **kw) -> "Segmenter":
        """As the mixin's, but every weight must match (the mixin's default accepts missing ones) and quiet."""
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loading weights from local directory"
            return super()._from_pretrained(strict=strict, **kw)

    def card_kwargs(self) -> dict:
        return {"backbone": self.backbone_name, "resolutions": ", ".join(str(v.resolution) for v in self.views
                                                                         if not v.hflip),
                "hflip": any(v.hflip for v in self.views), "threshold": self.threshold, "params_hash": self.params_hash,
                "source": self.source}

    def backbone(self, device: str = "auto") -> Backbone:
        """The frozen backbone (loaded once, on ``device``); the head is moved beside it."""
        if self._backbone is None:
            self._backbone = load_backbone(self.backbone_name, self.dtype, device, self.backbone_revision, self.features)
            self.head.to(self._backbone.device)
        return self._backbone

    def decode(self, image: Photo) -> tuple[np.ndarray, tuple[int, int], str | None]:
        """RGB uint8 pixels, the (H, W) the map is made at, and a note: a path is decoded as ``selfment
        segment`` decodes photos (EXIF orientation, first frame, bounded decoding of huge JPEGs), a PIL
        image is oriented by its EXIF tag, an (H, W, 3) uint8 array is taken as is."""
        if isinstance(image, (str, Path)):
            return load_photo(image, max(v.resolution for v in self.views))
        if isinstance(image, Image.Image):
            pixels = rgb_pixels(ImageOps.exif_transpose(image))
        else:
            pixels = np.asarray(image)
            if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
                raise ValueError(f"an image array must be RGB uint8 (H, W, 3), got {pixels.dtype} {pixels.shape}")
        return pixels, pixels.shape[:2], None

    def maps(self, images: list[tuple[np.ndarray, tuple[int, int]]], batch_size: int = 4,
             device: str = "auto") -> Iterator[np.ndarray]:
        """Probability maps of decoded (pixels, (H, W)) images, in order: per ``batch_size`` images, each view's
        float16 features in one forward (as extraction batches them), fused at (H, W) (docs/method.md "Method: inference")."""
        backbone = self.backbone(device)
        for s in range(0, len(images), batch_size):
            batch = images[s : s + batch_size]
            with timing.section("forward"):  # resize, normalise, the backbone, to host memory
                features = [forward_f16(backbone, torch.from_numpy(np.stack([preprocess(px, *v) for px, _ in batch])))[0]
                            for v in self.views]
            for k, (_, size) in enumerate(batch):
                with timing.section("head"):  # the head on every view, upsampled and fused
                    fused = fuse_views(self.head, [(f[k], v.hflip) for f, v in zip(features, self.views)], size)
                yield fused

    def predict(self, images: Iterable[Photo], batch_size: int = 4, device: str = "auto") -> list[Segmentation]:
        """Segment photos (paths, PIL images or RGB uint8 arrays): a probability map and a binary mask each,
        at each image's size as viewers show it. An unreadable file raises DatasetError naming it."""
        decoded = [self.decode(image) for image in images]
        probs = self.maps([(pixels, size) for pixels, size, _ in decoded], batch_size, device)
        return [Segmentation(prob, prob > self.threshold, note) for prob, (_, _, note) in zip(probs, decoded)]


def load_segmenter(directory: Path | str, **overrides) -> Segmenter:
    """:meth:`Segmenter.from_pretrained` of a local model directory (``overrides``: config entries to replace,
    e.g. ``backbone`` where the colleague's copy of it lives), with one-line errors naming the directory."""
    directory = Path(directory)
    missing = ([f for f in ("config.json", "model.safetensors") if not (directory / f).is_file()]
               if directory.is_dir() else ["such folder"])
    if missing:
        raise PipelineError(f"{directory}: not a model directory (no {' or '.join(missing)}; "
                            f"`dvc repro export` writes models/)")
    try:
        return Segmenter.from_pretrained(directory, **overrides)
    except Exception as exc:  # json, safetensors and state-dict errors all mean "not a valid model"
        raise PipelineError(f"cannot load model {directory}: {' '.join(str(exc).split())[:200]}") from None
