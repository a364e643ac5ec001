"""The paper's backbone width on CPU: `dvc repro` of the demo with a random DINOv3 of ViT-7B/16's width.

    python benchmarks/bench_7b_width.py --work /tmp/selfment-7b [--layers 2] [--n-images 8]

Builds, in code, a DINOv3 config with the released ViT-7B/16 checkpoint's width, token layout and
block design (``pipeline.features.backbone.vit7b16_config``: hidden_size 4096, 32 heads, gated SiLU MLP of 8192,
patch 16, 4 register tokens, LayerScale, RoPE settings) but ``--layers`` layers and random weights, saves it with
``save_pretrained`` in bfloat16, and runs the pipeline on a copy of this repository:
``selfment configure backbone/dinov3-vit7b16 data/demo`` with the saved directory as ``backbone.name``,
training at 768 px and inference views ``predict.resolutions: [768, 1536]`` (the official code's
inference size). Prints each stage's wall time (its ``--timing`` file), the peak RSS of the
largest process, the stores' bytes per image and the head's parameter count, as a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from dvc_run import project_copy, repro, timing_table

from pipeline.features.backbone import vit7b16_config


def build_model(path: Path, layers: int, hidden: int, heads: int, intermediate: int) -> None:
    from transformers import DINOv3ViTModel

    cfg = vit7b16_config(layers, hidden_size=hidden, num_attention_heads=heads, intermediate_size=intermediate)
    torch.manual_seed(0)
    DINOv3ViTModel(cfg).to(torch.bfloat16).eval().save_pretrained(path)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--n-images", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=768)
    ap.add_argument("--high", type=int, default=1536)
    ap.add_argument("--hidden", type=int, default=4096, help="(smaller only to try the script quickly)")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--intermediate", type=int, default=8192)
    ap.add_argument("--batch-size", type=int, default=1)
    a = ap.parse_args()
    work = a.work.resolve()
    if work.exists():
        sys.exit(f"{work} exists: choose a new --work folder")
    model, repo = work / "model", work / "repo"
    build_model(model, a.layers, a.hidden, a.heads, a.intermediate)
    project_copy(repo)
    subprocess.run(["selfment", "configure", "backbone/dinov3-vit7b16", "data/demo"], cwd=repo, check=True)
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p["demo"]["n_images"] = a.n_images
    p["backbone"].update(name=str(model), resolution=a.resolution, dtype="bfloat16", batch_size=a.batch_size,
                         device="cpu")
    p["predict"]["resolutions"] = [a.resolution, a.high]
    p["train"]["device"] = "cpu"
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))

    total = repro(repo, work / "repro.log")
    table, summary = timing_table(repo, total)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    feats = repo / "data/features"
    stores = {str(s.relative_to(feats)): du(s) / a.n_images for s in sorted(feats.rglob("*.zarr"))}
    from safetensors import safe_open

    with safe_open(str(repo / "models/head.final.safetensors"), framework="pt") as fh:
        head = sum(fh.get_tensor(k).numel() for k in fh.keys())
    print(f"\n{a.n_images} demo images, {a.layers} layers of ViT-7B/16 width, bfloat16, "
          f"{torch.get_num_threads()} threads: dvc repro {total:.0f} s, peak RSS {rss:.1f} GiB, head {head:,} parameters\n")
    print(table)
    print("\n| store | MB per image |\n|---|---|")
    for name, b in stores.items():
        print(f"| `{name}` | {b / 1e6:.2f} |")
    print(json.dumps({**summary, "peak_rss_gib": rss, "store_bytes_per_image": stores,
                      "head_parameters": head}))


if __name__ == "__main__":
    main()
