"""The ``selfment`` command: one subcommand per DVC stage."""
import click

from stages.demo import demo_data
from stages.extract import extract


@click.group()
def main() -> None:
    """Selfment: self-supervised foreground segmentation as a staged DVC pipeline."""


for command in (demo_data, extract):
    main.add_command(command)
if __name__ == "__main__":
    main()
