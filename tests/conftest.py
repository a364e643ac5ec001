"""Shared fixtures: tiny random DINOv2/DINOv3 models built in code, small on-disk datasets, planted
feature grids, and the shared real model / data (tests that need them skip when absent)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.project.configure import merge

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def _own_blas_threads():
    """Every test starts with the BLAS thread pools the session started with: a stage run in process sets
    them to one thread (the runner's rule), which would slow every later test's numpy and scipy."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=None):
        yield


@pytest.fixture(scope="session")
def write_params():
    """``write_params(path, updates)``: the project's params.yaml deep-merged with ``updates`` (a dataset
    spec or any other dict value given in full replaces the whole old value only where it is not a dict)."""
    def write(path: Path, updates: dict) -> Path:
        base = yaml.safe_load((ROOT / "params.yaml").read_text())
        for spec in (updates.get("data", {}).get("train", {}).get("dataset"),):
            if spec is not None:  # a dataset spec replaces the default one whole
                base["data"]["train"]["dataset"] = {}
        if "eval" in updates.get("data", {}):
            base["data"]["eval"] = {}
        p = merge(base, updates)
        specs = [p["data"]["train"]["dataset"], *p["data"]["eval"].values()]
        p["demo"]["write"] = sorted({Path(s["root"]).name for s in specs if Path(s["root"]).parent == Path("data")})
        path.write_text(yaml.safe_dump(p, sort_keys=False))
        return path
    return write


class TinyViTs:
    """Random transformers ViTs with the real token layouts, small enough for CPU tests."""

    @staticmethod
    def dinov2(registers: int = 0):
        from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

        torch.manual_seed(0)
        kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  patch_size=14, image_size=56)
        if registers:
            return Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=registers, **kw)).eval()
        return Dinov2Model(Dinov2Config(mlp_ratio=2, **kw)).eval()

    @staticmethod
    def dino():
        """DINO v1 (transformers' ViTModel, patch 16, CLS only), as facebook/dino-vits16 but tiny."""
        from transformers import ViTConfig, ViTModel

        torch.manual_seed(0)
        cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        patch_size=16, image_size=224)
        return ViTModel(cfg, add_pooling_layer=False).eval()

    @staticmethod
    def dinov3():
        from transformers import DINOv3ViTConfig, DINOv3ViTModel

        torch.manual_seed(0)
        cfg = DINOv3ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              patch_size=16, num_register_tokens=4, image_size=64)
        return DINOv3ViTModel(cfg).eval()


@pytest.fixture(scope="session")
def tiny_vits() -> type[TinyViTs]:
    return TinyViTs


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random DINOv2 saved as a local Hugging Face directory (the offline loading path)."""
    d = tmp_path_factory.mktemp("tiny-dinov2")
    TinyViTs.dinov2().save_pretrained(d)
    return d


def _write_pairs(root: Path, n: int = 5, size=(60, 45), images="images", masks="masks", seed=0,
                 stems: list[str] | None = None) -> Path:
    """n random RGB JPEGs + binary PNG masks under root/images, root/masks (named ``stems``, default
    im00, im01, ...); returns root."""
    rng = np.random.default_rng(seed)
    (root / images).mkdir(parents=True, exist_ok=True)
    (root / masks).mkdir(parents=True, exist_ok=True)
    for stem in stems or [f"im{i:02d}" for i in range(n)]:
        w, h = size
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / images / f"{stem}.jpg")
        m = np.zeros((h, w), np.uint8)
        m[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
        Image.fromarray(m).save(root / masks / f"{stem}.png")
    return root


@pytest.fixture(scope="session")
def write_pairs():
    """``write_pairs(root, n=5, size=(w, h), images=..., masks=..., stems=...)``: a small paired dataset."""
    return _write_pairs


@pytest.fixture
def pairs(tmp_path) -> Path:
    return _write_pairs(tmp_path / "ds")


def _planted(h=12, w=12, box=(slice(3, 7), slice(4, 9)), d=8, noise=0.05, seed=0):
    """Background patches ~ e0, object patches ~ e1, plus Gaussian noise; returns features, mask."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), bool)
    mask[box] = True
    f = np.zeros((h, w, d), np.float32)
    f[~mask, 0] = 1
    f[mask, 1] = 1
    return f + noise * rng.standard_normal(f.shape).astype(np.float32), mask


@pytest.fixture(scope="session")
def planted():
    """``planted(h, w, box, d, noise, seed)`` -> (h, w, d) features with a known object mask."""
    return _planted


def _shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def shared_model() -> Path:
    """The shared stand-in backbone (a saved Dinov2Model); skips when absent."""
    return _shared("models", "dinov2-small-imgfocus")


@pytest.fixture(scope="session")
def shared_duts() -> Path:
    """The shared DUTS-TR pairs in the official layout; skips when absent."""
    return _shared("datasets", "DUTS-TR")


@pytest.fixture
def perturbed(monkeypatch):
    """``perturbed(delta, gram=1e-6)``: every product of the solver with a random relative error -
    the proposal phase's float32 products by ``delta`` (1e-6: another CPU's BLAS; 1e-3: TF32 on a
    GPU), the similarities f f^T by ``gram``, the certifying float64 products by 1e-12 (far above any
    float64 BLAS's rounding)."""
    import pipeline.bipartition.ncut as module

    gen = torch.Generator().manual_seed(0)

    def noisy(fn, delta):
        def wrapped(*args):
            out = fn(*args)
            return out.mul_(1 + delta * (2 * torch.rand(out.shape, generator=gen, dtype=out.dtype) - 1))
        return wrapped

    def apply(delta: float, gram: float = 1e-6) -> None:
        monkeypatch.setattr(module, "_gram", noisy(module._gram, gram))
        monkeypatch.setattr(module, "_product32", noisy(module._product32, delta))
        monkeypatch.setattr(module, "_product64", noisy(module._product64, 1e-12))
    return apply


PAUSE_HARNESS = """
import sys, time
from pathlib import Path
import pipeline.core.runner as runner
signals, point, argv = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]

def pause():
    (signals / "paused").touch()
    while not (signals / "go").exists():
        time.sleep(0.01)

def pausing(fn, before):  # fn, pausing once: before its first call, or after it
    calls = []
    def wrapped(*args, **kwargs):
        calls.append(1)
        if before and len(calls) == 1:
            pause()
        out = fn(*args, **kwargs)
        if not before and len(calls) == 1:
            pause()
        return out
    return wrapped

if point == "lock":     # a run about to take its resume lock
    runner._try_lock = pausing(runner._try_lock, before=True)
elif point == "saved":  # a run that has saved its first finished unit (a training: its first epoch)
    runner.Resume.save = pausing(runner.Resume.save, before=False)
from stages.cli import main
main(argv)
"""


class Paused:
    """A ``selfment`` command in another process, held at ``point`` until :meth:`go` (a deterministic
    interleaving of two runs, whatever the machine's timing)."""

    def __init__(self, signals: Path, point: str, args: list[str]):
        import subprocess
        import sys
        import time

        signals.mkdir(parents=True, exist_ok=True)
        self.signals = signals
        self.proc = subprocess.Popen([sys.executable, "-c", PAUSE_HARNESS, str(signals), point, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 300
        while not (signals / "paused").exists():
            assert self.proc.poll() is None, f"ended before pausing at {point}:\n{self.proc.communicate()[0]}"
            assert time.monotonic() < deadline, f"never reached {point}"
            time.sleep(0.01)

    def go(self) -> tuple[int, str]:
        """Let it go on; its exit status and output."""
        (self.signals / "go").touch()
        out = self.proc.communicate(timeout=300)[0]
        return self.proc.returncode, out

    def kill(self) -> None:
        import os
        import signal

        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def paused(tmp_path):
    """``paused(point, args)``: a :class:`Paused` ``selfment`` command (points: ``lock``, ``saved``);
    killed at the end of the test if still held."""
    started = []

    def start(point: str, args: list[str]) -> Paused:
        started.append(Paused(tmp_path / f"signals{len(started)}", point, [str(a) for a in args]))
        return started[-1]
    yield start
    for p in started:
        if p.proc.poll() is None:
            p.kill()


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(kib)``: a folder on a tmpfs of ``kib`` KiB mounted for the test (a real full disk: the
    kernel's ENOSPC, not an injected one); ``small_disk.grow(kib)`` frees space by enlarging it. Skipped
    unless the tests run as root where mounting works (CI does)."""
    import subprocess

    mounted = []

    def mount(kib: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("a real full disk needs root to mount a small tmpfs")
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(path)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(path)
        return path

    def grow(kib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={kib}k", str(mounted[-1])], check=True)

    mount.grow = grow
    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)
