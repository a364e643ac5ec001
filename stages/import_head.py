"""``selfment import-head``: the authors' released head as a model directory like the export stage's, so that
``Segmenter.from_pretrained(DIR)`` and ``selfment segment --model DIR`` use it (not a DVC stage)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from pipeline.core.errors import PipelineError
from pipeline.core.runner import check_out_dir, file_digest
from pipeline.features.backbone import backbone_info, backbone_revision
from pipeline.head.release import read_release
from pipeline.head.segmenter import MODEL_FILES, Segmenter

RELEASE_RESOLUTION = 1536  # the release's folder inference size when its file names none


@click.command("import-head")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--backbone", required=True, help="The backbone the head was trained on: a Hugging Face id or a "
              "local save_pretrained directory (its width must be the head's).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Model directory.")
@click.option("--resolution", "resolutions", type=int, multiple=True,
              help=f"Inference size(s) (default: the file's args.img_size, else {RELEASE_RESOLUTION}, the release's).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True,
              help="The backbone's dtype for inference.")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Mask threshold on p.")
def import_head(file: Path, backbone: str, out: Path, resolutions: tuple[int, ...], dtype: str,
                threshold: float) -> None:
    """Write OUT/{config.json, model.safetensors, README.md} from the released head FILE, read without running
    pickled code; its card names the file and its sha256."""
    try:
        check_out_dir(out, allow=frozenset(MODEL_FILES))  # a model directory is replaced; any other folder is refused
        head, args = read_release(file)
        info = backbone_info(backbone)
        if info.hidden_size != head.config["dim"]:
            raise PipelineError(f"{file}: the head takes {head.config['dim']}-wide features but {backbone} gives "
                                f"{info.hidden_size}-wide ones (args name {args.get('dino_model_name', 'no model')})")
        sizes = list(resolutions) or [int(args.get("img_size") or RELEASE_RESOLUTION)]
        for s in sizes:
            info.grid(s)
        model = Segmenter.from_head(head, backbone=backbone, backbone_revision=backbone_revision(backbone),
                                    dtype=dtype, resolutions=sizes, threshold=threshold,
                                    source=f"{file.name} (sha256 {file_digest(file)})")
    except PipelineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    model.save_pretrained(out, model_card_kwargs=model.card_kwargs())
    click.echo(f"{out}: Segmenter of the released head {file} on {backbone} at {', '.join(map(str, sizes))} px")
