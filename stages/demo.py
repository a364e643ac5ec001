"""Stage demo_data: write the deterministic synthetic demo set (images/ + masks/)."""
from pathlib import Path

import click
from PIL import Image
from tqdm import tqdm

from pipeline.core.demo import make_demo
from pipeline.core.runner import claim_dir, fingerprint, stage


@stage("demo-data", reads=("demo.n_images", "demo.seed"))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def demo_data(p, out: Path) -> None:
    """Generate the synthetic demo dataset (params: demo.n_images, demo.seed)."""
    out = claim_dir(out, fingerprint(p.demo.n_images, p.demo.seed))
    (out / "images").mkdir(exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    for stem, image, mask in tqdm(make_demo(p.demo.n_images, p.demo.seed), total=p.demo.n_images, desc="demo"):
        Image.fromarray(image).save(out / "images" / f"{stem}.png")
        Image.fromarray(mask.astype("uint8") * 255).save(out / "masks" / f"{stem}.png")
