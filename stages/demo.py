"""Stage demo_data: write the deterministic synthetic demo set (images/ + masks/)."""
from pathlib import Path

import click
from PIL import Image
from tqdm import tqdm

from pipeline.demo import make_demo
from stages.common import load_params, params_option


@click.command("demo-data")
@params_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def demo_data(params_path: Path, out: Path) -> None:
    """Generate the synthetic demo dataset (params: demo.n_images, demo.seed)."""
    p = load_params(params_path)["demo"]
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for stem, image, mask in tqdm(make_demo(p["n_images"], p["seed"]), total=p["n_images"], desc="demo"):
        Image.fromarray(image).save(out / "images" / f"{stem}.png")
        Image.fromarray(mask.astype("uint8") * 255).save(out / "masks" / f"{stem}.png")
