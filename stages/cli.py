"""The ``selfment`` command: one subcommand per DVC stage, plus ``segment`` for your own images."""
import click

from stages.demo import demo_data
from stages.evaluate import evaluate
from stages.extract import extract
from stages.predict import predict
from stages.pseudo_masks import pseudo_masks_cmd
from stages.report import report
from stages.segment import segment
from stages.train import train


@click.group()
def main() -> None:
    """Selfment: self-supervised foreground segmentation as a staged DVC pipeline."""


for command in (demo_data, extract, pseudo_masks_cmd, train, predict, evaluate, report, segment):
    main.add_command(command)
if __name__ == "__main__":
    main()
