"""The authors' released head (their repository's ``train.py`` output, on the hub as ``geshang/Selfment``) as
this project's :class:`~pipeline.head.model.Head` (docs/own-images.md "Coming from the authors' release").

The release saves a torch file holding a dict: ``model_state`` with ``proj.0.weight`` (hidden x d),
``proj.0.bias``, ``proj.2.weight`` (embed x hidden), ``proj.2.bias``, ``classifier.weight`` (classes x embed),
``classifier.bias`` (the names and shapes of this project's head: Eq. 9's projection and classifier), and an
optional ``args`` dict (``dino_type``, ``dino_model_name``, ``dino_depth``, ``img_size``). Its inference is
this project's too: softmax(logits)[:, 1] on L2-normalised last-layer patch features, bilinear to the image.

The file is read with ``torch.load(weights_only=True)``: tensors and plain values only, so a file carrying
any other pickled object is refused before any of its code can run.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from pipeline.head.model import Head, HeadError

STATE_KEYS = ("proj.0.weight", "proj.0.bias", "proj.2.weight", "proj.2.bias", "classifier.weight", "classifier.bias")


def read_release(path: Path | str) -> tuple[Head, dict]:
    """The head of a released file and its ``args`` ({} when absent); HeadError in one line naming the file
    for anything else: a pickled object (never unpickled), another layout, inconsistent shapes."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # what weights_only refuses: its message names the object's type
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HeadError(f"{path}: refused: it holds objects other than tensors and plain values, which would "
                        f"run code when loaded ({first[:160]})") from None
    except Exception as exc:
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__  # an empty file's error has no message
        raise HeadError(f"{path}: not a readable torch file ({detail})") from None
    state = obj.get("model_state") if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise HeadError(f"{path}: no 'model_state' dict (the release's layout: "
                        f"{{'model_state': {{{', '.join(STATE_KEYS)}}}, 'args': {{...}}}})")
    missing = [k for k in STATE_KEYS if not isinstance(state.get(k), torch.Tensor)]
    if missing:
        raise HeadError(f"{path}: model_state lacks the tensors {', '.join(missing)}")
    args = obj.get("args") or {}
    if not isinstance(args, dict):
        raise HeadError(f"{path}: 'args' is a {type(args).__name__}, expected a dict")
    hidden, dim = state["proj.0.weight"].shape
    embed, classes = state["proj.2.weight"].shape[0], state["classifier.weight"].shape[0]
    head = Head(dim, hidden, embed, classes)
    try:
        head.load_state_dict({k: state[k].float() for k in STATE_KEYS})
    except RuntimeError as exc:
        raise HeadError(f"{path}: inconsistent shapes in model_state ({' '.join(str(exc).split())[:160]})") from None
    return head.eval(), args
