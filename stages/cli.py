"""The ``selfment`` command: one subcommand per DVC stage, plus ``segment`` for your own images and
``configure`` to write params.yaml from presets, ``plan`` to see what a run will hold on disk,
``compare`` to tell whether two runs really differ, ``stores`` to list and prune the shared feature stores.

Subcommands are imported on use, so a stage runs (and DVC tracks) only its own modules."""
import importlib

import click

COMMANDS = {
    "demo-data": "stages.demo:demo_data",
    "extract": "stages.extract:extract",
    "pseudo-masks": "stages.pseudo_masks:pseudo_masks",
    "train": "stages.train:train",
    "self-train": "stages.train:self_train_cmd",
    "predict": "stages.predict:predict",
    "evaluate": "stages.evaluate:evaluate",
    "report": "stages.report:report",
    "segment": "stages.segment:segment",
    "configure": "stages.configure:configure",
    "plan": "stages.plan:plan",
    "plots-page": "stages.plots_page:plots_page",
    "export": "stages.export:export",
    "import-head": "stages.import_head:import_head",
    "compare": "stages.compare:compare",
    "spread": "stages.compare:spread",
    "stores": "stages.stores:stores",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup)
def main() -> None:
    """Selfment: self-supervised foreground segmentation as a staged DVC pipeline."""


if __name__ == "__main__":
    main()
