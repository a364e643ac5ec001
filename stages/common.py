"""What every stage shares: params, one-line errors, torchrun process groups."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click
import torch
import torch.distributed as dist
import yaml

from pipeline.errors import PipelineError

params_option = click.option(
    "--params", "params_path", default="params.yaml", show_default=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Parameters file.",
)


def load_params(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def one_line_errors(fn):
    """Report PipelineError as ``error: <one line>`` on stderr with exit status 2, no stack trace."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PipelineError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


class Dist:
    """torchrun environment (RANK, WORLD_SIZE); a single process when launched without torchrun."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = int(os.environ.get("RANK", 0))
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
