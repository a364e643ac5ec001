"""`selfment segment` at corpus scale: folder trees, globs and list files streamed into output names that keep
each image's relative path (equal file names in different folders never collide, nothing lands outside --out
whatever a list holds), bad images one line each, one merged COCO file, ranks sharing the images under
torchrun, and a killed job resuming to the same outputs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import PAUSE_HARNESS
from PIL import Image

from pipeline.head.corpus import OUTSIDE, Batches, output_name, read_unit, repeated, write_list
from pipeline.head.model import Head
from pipeline.head.segmenter import Segmenter
from stages.cli import main


def test_output_names_keep_relative_paths_and_never_leave_the_output_folder(tmp_path):
    root = tmp_path / "corpus"
    assert output_name(root / "a/x.jpg", root) == PurePosixPath("a/x.png")
    assert output_name(root / "a/../b/x.jpg", root) == PurePosixPath("b/x.png")
    for nasty in ("../../etc/passwd.jpg", "/etc/shadow.png", "a/../../../x.jpg", ".."):
        name = output_name(nasty if os.path.isabs(nasty) else root / nasty, root)
        out = tmp_path / "out"
        assert os.path.normpath(out / name).startswith(str(out) + os.sep), nasty
        assert name.parts[0] == OUTSIDE and ".." not in name.parts


def test_a_listing_streams_folders_globs_and_list_files_with_unit_offsets(tmp_path):
    for f in ("c/a/x.png", "c/b/x.png", "c/b/d/y.jpg", "c/b/notes.txt", "g/1.jpg", "g/2.jpg"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_bytes(b"")
    (tmp_path / "list.txt").write_text("c/a/x.png\n\n/abs/elsewhere/z.png\nc/a/x.png\n")
    listing = tmp_path / "l.txt"
    n, offsets = write_list([str(tmp_path / "c"), str(tmp_path / "g/*.jpg")], tmp_path / "list.txt", listing, 2)
    lines = [tuple(line.split("\t")) for line in listing.read_text().splitlines()]
    assert n == 8 and [name for _, name in lines] == ["a/x.png", "b/x.png", "b/d/y.png", "1.png", "2.png",
                                                      "c/a/x.png", f"{OUTSIDE}/abs/elsewhere/z.png", "c/a/x.png"]
    assert len(offsets) == 4 and read_unit(listing, int(offsets[2]), 2) == lines[4:6]
    assert repeated(listing) == {7}  # the second c/a/x.png: the first is kept
    units = Batches(offsets, n, 2)  # made on demand; a rank's share is a view
    assert len(units) == 4 and units[2].args == (int(offsets[2]), 4, 2) and units[2].uid == "000000002"
    assert [u.uid for u in units[1::2]] == ["000000001", "000000003"] and units[-1].size == 2
    assert [read_unit(listing, *u.args[::2]) for u in units] == [lines[k:k + 2] for k in range(0, 8, 2)]


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_model_dir):
    torch.manual_seed(3)
    d = tmp_path_factory.mktemp("model")
    Segmenter.from_head(Head(32, 16, 8), backbone=str(tiny_model_dir), resolutions=[56]).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Seven images in a tree (two x.png in different folders), one broken file."""
    root = tmp_path_factory.mktemp("corpus") / "photos"
    rng = np.random.default_rng(0)
    for f in ("a/x.png", "b/x.png", "b/deep/y.jpg", "c/1.png", "c/2.png", "c/3.png", "c/4.png"):
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (30 + len(f), 40, 3), dtype=np.uint8)).save(root / f)
    (root / "a/broken.jpg").write_bytes(b"not an image")
    return root


def params(tmp_path, write_params):
    return write_params(tmp_path / "params.yaml", {"backbone": {"batch_size": 2, "device": "cpu"}})


@pytest.mark.slow
def test_a_folder_tree_gives_one_map_per_image_at_its_relative_path_and_one_coco_file(
        model, corpus, tmp_path, write_params):
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["segment", "--params", str(params(tmp_path, write_params)), str(corpus),
                                  "--model", str(model), "--out", str(out), "--coco", str(tmp_path / "c.json")])
    assert r.exit_code == 1 and "7 maps written, 1 skipped" in r.output  # the broken file: one line, the rest done
    assert sum("broken.jpg" in line for line in r.output.splitlines()) == 1
    maps = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert maps == ["a/x.png", "b/deep/y.png", "b/x.png", "c/1.png", "c/2.png", "c/3.png", "c/4.png"]
    assert Image.open(out / "b/deep/y.png").size == Image.open(corpus / "b/deep/y.jpg").size
    doc = json.loads((tmp_path / "c.json").read_text())
    # a folder's files, then its subfolders, each in sorted order
    assert [i["file_name"] for i in doc["images"]] == ["a/x.png", "b/x.png", "b/deep/y.jpg", "c/1.png", "c/2.png",
                                                       "c/3.png", "c/4.png"]
    assert [a["image_id"] for a in doc["annotations"]] == list(range(1, 8))
    assert not [p for p in out.iterdir() if p.name.startswith(".inputs")]  # the listing is gone once done


@pytest.mark.slow
def test_a_list_file_cannot_write_outside_the_output_folder_even_through_a_link(model, corpus, tmp_path,
                                                                                 write_params):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / ".selfment").write_text("")   # an output folder of this project's ...
    os.symlink(elsewhere, out / "b")     # ... holding a link that points out of it
    os.symlink(corpus, tmp_path / "photos")
    lst = tmp_path / "list.txt"          # relative, absolute (outside the list's folder), and climbing out and back
    lst.write_text(f"photos/a/x.png\n{corpus}/c/1.png\n../{tmp_path.name}/photos/c/2.png\n")
    run = ["segment", "--params", str(params(tmp_path, write_params)), "--model", str(model), "--out", str(out)]
    r = CliRunner().invoke(main, [*run, "--list", str(lst)])
    assert r.exit_code == 0 and "3 maps written, 0 skipped" in r.output, r.output
    outside = PurePosixPath(OUTSIDE, *(corpus / "c/1.png").parts[1:]).with_suffix(".png")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == sorted(
        ["photos/a/x.png", "photos/c/2.png", str(outside)])
    (tmp_path / "t2").mkdir()
    os.symlink(corpus / "b", tmp_path / "t2/b")
    (tmp_path / "t2/list.txt").write_text("b/x.png\n")  # its output name b/x.png lies behind the link
    r = CliRunner().invoke(main, [*run, "--list", str(tmp_path / "t2/list.txt")])
    assert r.exit_code == 1 and "b/x.png would be written outside" in r.output and "0 maps written, 1 skipped" in r.output
    assert not list(elsewhere.iterdir())


def held_by(proc: Path, signals: Path) -> bool:
    try:
        return str(signals).encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


TORCHRUN = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python"]


@pytest.mark.slow
def test_a_corpus_under_torchrun_killed_part_way_resumes_to_the_uninterrupted_runs_outputs(
        model, corpus, tmp_path, write_params):
    p = params(tmp_path, write_params)
    args = ["segment", "--params", str(p), str(corpus), "--model", str(model), "--coco"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.run([*TORCHRUN, "selfment", *args, str(tmp_path / "w.json"), "--out", str(tmp_path / "w")],
                           capture_output=True, text=True, env=env)
    assert whole.returncode == 1 and "7 maps written, 1 skipped" in whole.stdout, whole.stderr[-3000:]
    signals = tmp_path / "signals"
    signals.mkdir()
    held = subprocess.Popen([*TORCHRUN, sys.executable, "-c", PAUSE_HARNESS, str(signals), "saved", *args,
                             str(tmp_path / "k.json"), "--out", str(tmp_path / "k")], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (signals / "paused").exists():  # a rank has saved its first unit (its maps are written)
        assert held.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1)
    os.killpg(held.pid, signal.SIGKILL)  # the whole job: the launcher and every rank (its workers have their own
    held.wait()                          # process groups: found by the signals folder in their command line)
    while ranks := [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and held_by(p, signals)]:
        for pid in ranks:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)  # until they are gone, and their locks with them
    first = {f: f.stat().st_mtime_ns for f in (tmp_path / "k").rglob("*.png")}
    assert 0 < len(first) < 7
    again = subprocess.run([*TORCHRUN, "selfment", *args, str(tmp_path / "k.json"), "--out", str(tmp_path / "k")],
                           capture_output=True, text=True, env=env)
    assert again.returncode == 1 and "7 maps written, 1 skipped" in again.stdout, again.stderr[-3000:]
    kept = [f for f, t in first.items() if f.stat().st_mtime_ns == t]
    assert kept  # the finished units' maps were not written again
    for f in (tmp_path / "w").rglob("*.png"):
        assert f.read_bytes() == (tmp_path / "k" / f.relative_to(tmp_path / "w")).read_bytes(), f
    assert json.loads((tmp_path / "k.json").read_text()) == json.loads((tmp_path / "w.json").read_text())
