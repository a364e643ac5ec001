"""``selfment stores``: the feature stores in this repository's shared store folder, what uses each (the
workspace, branches, tags, experiments: their store manifests), and ``--prune`` to remove those nothing uses
(docs/data.md "Stores shared by experiments")."""
from __future__ import annotations

import shutil
from pathlib import Path

import click

from pipeline.core.errors import PipelineError
from pipeline.features.shared import shared_root, size_bytes, used
from pipeline.features.store import StoreError, check_store_path


@click.command("stores")
@click.option("--repo", type=click.Path(exists=True, file_okay=False, path_type=Path), default=".",
              show_default=True, help="The DVC repository.")
@click.option("--prune", is_flag=True, help="Remove every complete store that nothing uses.")
def stores(repo: Path, prune: bool) -> None:
    """List the shared feature stores (fingerprint, size, what they hold, who uses them); prune unused ones.

    An incomplete store (an extraction running or interrupted) is never removed."""
    root = shared_root(repo)
    if root is None:
        click.echo(f"error: {repo}: not in a DVC repository (stores are shared only inside one)", err=True)
        raise SystemExit(2)
    try:
        users = used(repo.resolve())
    except PipelineError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    found = sorted(root.glob("*.zarr")) if root.is_dir() else []
    freed = 0
    for store in found:
        try:
            attrs = check_store_path(store)
        except StoreError:
            click.echo(f"{store.name}: not a selfment store: left alone")
            continue
        fp, gb = store.name.removesuffix(".zarr"), size_bytes(store) / 1e9
        what = (f"{attrs.get('backbone', '?')}, {attrs.get('resolution', '?')} px"
                f"{', mirrored' if attrs.get('hflip') else ''}, {len(attrs.get('stems', []))} images")
        state = ("used by " + ", ".join(sorted(set(users[fp]))) if fp in users else
                 "incomplete (being written, or interrupted)" if not attrs.get("complete") else "unused")
        if prune and state == "unused":
            shutil.rmtree(store)
            freed += gb
            state = "unused: removed"
        click.echo(f"{fp[:12]}  {gb:8.2f} GB  {what}  {state}")
    click.echo(f"{root}: {len(found)} stores" + (f"; {freed:.2f} GB freed" if prune else ""))
