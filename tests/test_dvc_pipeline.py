"""The DVC workflow on a temporary git + DVC copy of the project (tiny random backbone, tiny demo)."""
import hashlib
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dvc_project import ROOT, copy_project, ran, run

from pipeline.features.store import FeatureStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir):
    return copy_project(tmp_path_factory.mktemp("proj"), tiny_model_dir)


ALL_STAGES = {"demo_data@demo", "extract_train", "extract_eval@demo", "extract_views@demo", "pseudo_masks", "train",
              "self_train", "export", "predict@demo", "evaluate@demo", "report", "plots_page"}
UP_TO_DATE = "cls: up to date; kmeans: up to date; ncut: up to date; ncut_ipo: up to date"  # predict kept the baselines' maps


def test_repro_runs_every_stage_then_is_a_no_op(project):
    out = run(["dvc", "exp", "run", "-n", "baseline"], project)
    assert ran(out) == ALL_STAGES
    st = FeatureStore(project / "data/features/train.zarr")
    assert len(st) == 6 and st.grid == (8, 8)
    results = json.loads((project / "metrics/results.json").read_text())
    assert set(results["demo"]) == {"cls", "kmeans", "ncut", "ncut_ipo", "head"}
    table = (project / "tables/results.md").read_text().splitlines()
    assert [c.strip() for c in table[0].strip("|").split("|")][:2] == ["dataset", "method"]
    assert any(row.startswith("| demo ") and "| NCut + IPO " in row for row in table)
    for f in ["plots/ipo_convergence.csv", "plots/train_loss.csv", "plots/pr/demo/head.csv", "plots/panels/demo.png",
              "plots/figures/pr_demo.png", "plots/figures/ipo_convergence.png", "plots/figures/train_loss.png",
              "models/head.safetensors", "data/predictions/demo/head"]:
        assert (project / f).exists(), f
    forwards = {}
    for stage in ALL_STAGES:  # every stage records where its wall time went (README "Benchmarks")
        t = json.loads((project / f"metrics/timing/{stage.replace('@', '.')}.json").read_text())
        assert 0 < t["startup_s"] < t["wall_s"] and t.get("forward_s", 0) < t["wall_s"]
        forwards[stage] = t.get("forward_s", 0) > 0
    # the demo trains and evaluates on the same images at the same resolution: one store, extracted once
    assert sorted(s for s, f in forwards.items() if f) in (["extract_train"], ["extract_eval@demo"])
    assert len(list((project / ".dvc/cache/selfment/stores").iterdir())) == 1
    again = run(["dvc", "repro"], project)
    assert "Running stage" not in again
    assert "Data and pipelines are up to date" in run(["dvc", "status"], project)


SEGMENT_IN_A_FRESH_PROCESS = """
import sys
from pathlib import Path
from pipeline.core.maps import save_png
from pipeline.head.segmenter import Segmenter
model = Segmenter.from_pretrained(sys.argv[1])
images = sorted(Path(sys.argv[2]).iterdir())
for image, out in zip(images, model.predict(images, batch_size=int(sys.argv[4]))):
    save_png(out.prob, Path(sys.argv[3]) / (image.stem + ".png"))
"""


def test_the_exported_model_reloaded_in_a_fresh_process_gives_predicts_maps_byte_for_byte(project, tmp_path):
    """models/ (stage export) is a Hugging Face model directory: from_pretrained in a new interpreter,
    predict on the demo images in extraction's batches (one shard: 2 images), the head's PNGs exactly."""
    import sys

    models = project / "models"
    config = json.loads((models / "config.json").read_text())
    assert config["backbone"] == yaml.safe_load((project / "params.yaml").read_text())["backbone"]["name"]
    assert config["resolutions"] == [112] and len(config["params_hash"]) == 64
    assert "library_name: selfment" in (models / "README.md").read_text()
    run([sys.executable, "-c", SEGMENT_IN_A_FRESH_PROCESS, str(models), str(project / "data/demo/images"),
         str(tmp_path), "2"], ROOT)
    head = sorted((project / "data/predictions/demo/head").glob("*.png"))
    assert len(head) == 6
    for f in head:
        assert f.read_bytes() == (tmp_path / f.name).read_bytes(), f.name
    doc = json.loads((project / "data/predictions/demo/head.coco.json").read_text())
    assert [i["file_name"] for i in doc["images"]] == [f.name for f in sorted((project / "data/demo/images").iterdir())]


def test_each_store_is_on_disk_once_and_a_shard_deleted_by_hand_is_seen_and_rewritten(project):
    """Stores are hard links to the shared store folder (docs/data.md "Stores shared by experiments"): no store
    byte is in DVC's object cache, every output file is its shared store's, `dvc status` still sees a store
    changed by hand, and `dvc repro` restores exactly what is missing."""
    stores = [project / "data/features/train.zarr", project / "data/features/eval/demo.zarr"]
    cached = {f.parent.name + f.name for f in (project / ".dvc/cache/files/md5").rglob("*") if f.is_file()}
    files = [f for s in stores for f in s.rglob("*") if f.is_file()]
    assert len(files) > 10 and not {hashlib.md5(f.read_bytes()).hexdigest() for f in files} & cached
    shared = project / ".dvc/cache/selfment/stores"
    for s in stores:
        fp = FeatureStore(s).attrs["fingerprint"]
        assert json.loads((project / "data/stores" / ("train.json" if s.name == "train.zarr" else "eval.demo.json"))
                          .read_text()) == {str(s.relative_to(project)): fp}
        assert all(os.path.samefile(f, shared / f"{fp}.zarr" / f.relative_to(s)) for f in s.rglob("*") if f.is_file())
    shard = project / "data/features/eval/demo.zarr/features/c/1/0/0"
    before = shard.read_bytes()
    shard.unlink()
    status = run(["dvc", "status", "--json"], project)
    assert set(json.loads(status[status.index("{"):])) == {"extract_eval@demo", "predict@demo"}  # + its reader
    assert ran(run(["dvc", "repro"], project)) == {"extract_eval@demo"}  # same bytes: nothing after it reruns
    assert shard.read_bytes() == before


def test_every_declared_plot_renders_and_the_figures_need_no_network(project):
    """`dvc plots show`: each PNG figure and panel is an image on the page (drawn without network), each
    CSV plot has data; the PR figure of the set holds every method."""
    from PIL import Image

    shown = json.loads(run(["dvc", "plots", "show", "--json"], project).splitlines()[-1])
    assert not shown.get("errors")
    data = {k: v for k, v in shown["data"].items() if v}
    # the demo has no resolution study, and one training round (no self-training loss)
    assert set(shown["data"]) - set(data) == {"plots/resolution.csv", "plots/self_train_loss.csv"}
    images = {k: v[0]["url"] for k, v in data.items() if v[0]["type"] == "image"}
    assert set(images) >= {"plots/figures/pr_demo.png", "plots/figures/ipo_convergence.png",
                           "plots/figures/train_loss.png", "plots/panels/demo.png"}
    for url in images.values():
        im = Image.open(url).convert("L")
        assert im.width > 300 and len(im.getcolors(256)) > 10  # a drawing, not a blank canvas
    vega = {k for k, v in data.items() if v[0]["type"] == "vega" and v[0]["content"]["data"]["values"]}
    assert vega >= {"plots/ipo_convergence.csv", "plots/train_loss.csv", "PR curves: demo"}
    assert not any(k.startswith("plots/pr/") for k in shown["data"])  # the PR curves only as the one chart


def test_exp_run_ipo_iters_reruns_pseudo_masks_and_dependants_only(project):
    before = json.loads((project / "metrics/pseudo_masks.json").read_text())
    out = run(["dvc", "exp", "run", "-n", "iters1", "-S", "ipo.iters=1"], project)
    assert ran(out) == {"pseudo_masks", "train", "self_train", "export", "predict@demo", "evaluate@demo", "report"}
    after = json.loads((project / "metrics/pseudo_masks.json").read_text())
    assert after["ncut"] == before["ncut"] and after["ncut_ipo"] != before["ncut_ipo"]
    n_train, n_eval = after["n_images"], len(list((project / "data/predictions/demo/ncut").glob("*.png")))
    predicted = project / "metrics/predict/demo.json"
    assert after["computed"] == {"ncut_solved": 0, "ipo_run": n_train, "cls_run": 0, "kmeans_run": 0}
    assert json.loads(predicted.read_text())["demo"]["computed"] == {"ncut_solved": 0, "ipo_run": n_eval,
                                                                      "cls_run": 0, "kmeans_run": 0}
    # from scratch (no kept masks): every method recomputed, to the same bytes, so nothing after them reruns
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    shutil.rmtree(project / "data/pseudo/grids")
    shutil.rmtree(project / "data/predictions/demo/grids")
    assert ran(run(["dvc", "repro"], project)) == {"pseudo_masks", "predict@demo"}
    assert json.loads((project / "metrics/pseudo_masks.json").read_text())["computed"] == dict.fromkeys(
        ["ncut_solved", "ipo_run", "cls_run", "kmeans_run"], n_train)
    assert json.loads(predicted.read_text())["demo"]["computed"]["ncut_solved"] == n_eval
    again = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    for name in ("pseudo_masks", "predict@demo"):
        assert [o for o in again[name]["outs"] if not o["path"].startswith("metrics/")] == [
            o for o in lock[name]["outs"] if not o["path"].startswith("metrics/")], name  # counters and timings
    assert {k: v for k, v in json.loads((project / "metrics/pseudo_masks.json").read_text()).items()
            if k != "computed"} == {k: v for k, v in after.items() if k != "computed"}
    shown = run(["dvc", "exp", "show", "--csv"], project)
    assert "baseline" in shown and "iters1" in shown
    header = shown.splitlines()[0].split(",")
    metrics = header[header.index("parent") + 1:]  # Experiment, rev, typ, Created, parent, then the metrics
    assert metrics[:5] == ["demo.head.fmax_dataset", "demo.head.fmax_image", "demo.head.fmax_toolbox", "demo.head.iou",
                           "demo.head.acc"]
    assert not [c for c in header if "wall_s" in c or "startup_s" in c]  # timings are not metric columns
    brief = run(["dvc", "exp", "show", "--csv", "--drop", ".*", "--keep", r"Experiment|.*\.head\..*"], project)
    assert brief.splitlines()[0].split(",") == ["Experiment", *metrics[:5]]  # the docs' first command
    diff = run(["dvc", "metrics", "diff", "baseline", "iters1", "--json"], project)
    assert "ncut_ipo" in diff


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Charts(HTMLParser):
    """What a rendered DVC page draws per chart ``<div id=...>`` (ids given): its data marks (SVG shapes with
    geometry inside a ``role-mark`` group), its lines (paths of ``mark-line`` groups) and its legends."""

    def __init__(self, ids):
        super().__init__()
        self.charts = {i: {"marks": 0, "lines": 0, "legends": []} for i in ids}
        self.stack = []  # (chart, enclosing mark group class) of every open element

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        chart, group = self.stack[-1] if self.stack else (None, None)
        chart = a["id"] if tag == "div" and a.get("id") in self.charts else chart
        if chart and group and tag in ("path", "circle", "rect", "line") and len(a.get("d") or "shape") > 4:
            self.charts[chart]["marks"] += 1
            self.charts[chart]["lines"] += group.startswith("mark-line") and "L" in (a.get("d") or "")
        if chart and a.get("aria-roledescription") == "legend":
            self.charts[chart]["legends"].append(a.get("aria-label", ""))
        cls = a.get("class") or ""
        if tag not in VOID:
            self.stack.append((chart, cls if tag == "g" and "role-mark" in cls else group))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if self.stack:
            self.stack.pop()


@pytest.fixture(scope="session")  # session-scoped: set up (or skipped) before the module's project
def chromium() -> str:
    """The headless browser the plots pages are drawn in; a test that asks for it is skipped without it, so
    the skip always sits on the test that needs it."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("needs Chromium to draw the dvc plots pages (apt-get install chromium; CI installs it)")
    return path


def drawn_charts(page: Path) -> dict[str, dict]:
    """The charts with data of a ``dvc plots`` page (DVC writes ``var spec = {}`` for a declared plot without
    data) as headless Chromium draws them offline, every request through a dead proxy."""
    ids = [i for spec, i in re.findall(r"var spec = (.*);\s*vegaEmbed\('#([^']+)'", page.read_text()) if spec != "{}"]
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
                          "--virtual-time-budget=20000", "--dump-dom", page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=300).stdout
    parser = _Charts(ids)
    parser.feed(dom)
    return parser.charts


def test_two_queued_experiments_run_at_once_give_the_results_of_the_runs_one_by_one(project):
    """`dvc queue start -j 2`: two experiments at once, each in its own copy of the repository, extract nothing
    (their stores are linked from the shared folder) and end with exactly the metrics and intervals of
    baseline and iters1 (run before, one after the other in the workspace, whose params now hold ipo.iters=1)."""
    import time

    import dvc.api

    shared = sorted((project / ".dvc/cache/selfment/stores").iterdir())
    run(["dvc", "exp", "run", "--queue", "-n", "q-base", "-S", "ipo.iters=20"], project)
    run(["dvc", "exp", "run", "--queue", "-n", "q-iters1"], project)
    run(["dvc", "queue", "start", "-j", "2"], project)
    deadline = time.monotonic() + 1200  # a hang guard: both runs take about two minutes here
    while re.search(r"\b(Queued|Running)\b", status := run(["dvc", "queue", "status"], project)):
        assert time.monotonic() < deadline, status
        time.sleep(3)
    assert status.count("Success") == 2, status + run(["dvc", "queue", "logs", "q-base"], project)
    for queued in ("q-base", "q-iters1"):  # extract ran in each fresh copy, linked the stores, encoded nothing
        for stage in ("extract_train", "extract_eval.demo"):
            t = json.loads(dvc.api.read(f"metrics/timing/{stage}.json", repo=str(project), rev=queued))
            assert "forward_s" not in t, (queued, stage, t)
    assert sorted((project / ".dvc/cache/selfment/stores").iterdir()) == shared  # still one copy of each
    for queued, alone in (("q-base", "baseline"), ("q-iters1", "iters1")):
        for path in ("metrics/results.json", "metrics/pseudo_masks.json", "metrics/intervals.json"):
            results = [json.loads(dvc.api.read(path, repo=str(project), rev=r)) for r in (queued, alone)]
            assert [{k: v for k, v in r.items() if k != "computed"} for r in results[:1]] == [
                {k: v for k, v in r.items() if k != "computed"} for r in results[1:]], (queued, path)


def test_compare_reads_two_experiments_and_says_where_they_differ(project):
    """selfment compare through dvc.api: an experiment against itself differs by exactly 0 with a zero-width
    interval; against another, B - A is the difference of their results, and --all lists every experiment."""
    import dvc.api

    same = run(["selfment", "compare", "baseline", "baseline"], project)
    rows = [line for line in same.splitlines() if line.startswith("| demo")]
    assert len(rows) == 5 * 5  # methods x SOD metrics
    assert all("| +0.0 " in r and "[+0.0, +0.0]" in r and not r.rstrip(" |").endswith("*") for r in rows)
    out = run(["selfment", "compare", "baseline", "iters1", "--method", "ncut_ipo", "--metric", "iou"], project)
    [row] = [line for line in out.splitlines() if line.startswith("| demo")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    res = {rev: json.loads(dvc.api.read("metrics/results.json", repo=str(project), rev=rev))["demo"]["ncut_ipo"]["iou"]
           for rev in ("baseline", "iters1")}
    assert cells[3:6] == [f"{100 * res['baseline']:.1f}", f"{100 * res['iters1']:.1f}",
                          f"{100 * (res['iters1'] - res['baseline']):+.1f}"]
    low, high = map(float, cells[6].strip("[]").split(","))
    assert low <= float(cells[5]) <= high
    every = run(["selfment", "compare", "baseline", "--all", "--method", "head"], project)
    assert "iters1 - baseline" in every and "baseline - baseline" not in every
    half = run(["selfment", "compare", "baseline", "iters1", "--part", "2/2", "--method", "head"], project)
    assert "of part 2/2 (3 images per set)" in half and half.count("| demo") == 5


def test_plots_show_and_diff_draw_every_chart_offline(chromium, project):
    """A user's view of `dvc plots show` and `dvc plots diff`: every Vega chart with data is drawn with no
    network (the page carries Vega inline), the PR chart with one line per method and revision."""
    methods = "5 values: cls.csv, head.csv, kmeans.csv, ncut.csv, ncut_ipo.csv"
    for args, revs in ((["show"], ["workspace"]), (["diff", "baseline", "iters1"], ["baseline", "iters1"])):
        out = project / f"dvc_plots_{args[0]}"
        run(["dvc", "plots", *args, "-o", str(out)], project)
        page = (out / "index.html").read_text()
        assert "cdn.jsdelivr" not in page and page.count("<img") >= 4  # no CDN; the PNG figures and panels
        charts = drawn_charts(out / "index.html")
        assert set(charts) == {"PR_curves__demo", "plots_ipo_convergence_csv", "plots_train_loss_csv"}
        assert all(c["marks"] > 0 for c in charts.values()), charts  # none blank
        pr = charts["PR_curves__demo"]
        assert pr["lines"] >= 5 * len(revs) and any(methods in legend for legend in pr["legends"]), pr
        assert any(f"{len(revs)} value" in legend and revs[-1] in legend for legend in pr["legends"]), pr
    # the check can fail: with DVC's own scripts (Vega from a CDN) the same page draws nothing here
    (project / "cdn.html").write_text("<html><head>{scripts}</head><body>{plot_divs}</body></html>")
    run(["dvc", "plots", "show", "--html-template", "cdn.html", "-o", str(project / "dvc_plots_cdn")], project)
    assert "cdn.jsdelivr" in (project / "dvc_plots_cdn/index.html").read_text()
    assert [c["marks"] for c in drawn_charts(project / "dvc_plots_cdn/index.html").values()] == [0, 0, 0]


def test_a_loss_change_reruns_the_head_never_the_pseudo_masks_or_the_baselines_maps(project):
    status = run(["dvc", "status", "--json"], project)
    assert json.loads(status[status.index("{"):]) == {}
    params = project / "params.yaml"
    original = params.read_text()
    p = yaml.safe_load(original)
    p["loss"]["w_con"] = 0.0
    params.write_text(yaml.safe_dump(p, sort_keys=False))  # kept: the workspace is this experiment's from now on
    status = run(["dvc", "status", "--json"], project)
    assert set(json.loads(status[status.index("{"):])) == {"train", "self_train", "export"}
    out = run(["dvc", "exp", "run", "-n", "no-con"], project)
    assert ran(out) == {"train", "self_train", "export", "predict@demo", "evaluate@demo", "report"} and UP_TO_DATE in out


def test_editing_a_library_module_marks_exactly_the_stages_that_run_it(project):
    features = project / "pipeline/core/arrays.py"
    original = features.read_text()
    features.write_text(original + "\n# edited\n")
    try:
        status = run(["dvc", "status", "--json"], project)
        dry = ran(run(["dvc", "repro", "--dry"], project))
    finally:
        features.write_text(original)
    # the stages that import pipeline/core/arrays.py, and not extract; evaluate and report follow when
    # predict's maps change (the ipo.iters test shows that chain), since they do not run this module
    changed = set(json.loads(status[status.index("{"):]))
    assert changed == dry == {"pseudo_masks", "train", "self_train", "export", "predict@demo"}
    assert "Data and pipelines are up to date" in run(["dvc", "status"], project)


def test_changing_the_resolution_re_extracts_train_only(project):
    """backbone.resolution is the training store's alone: DVC sees extract_train changed (and what follows
    reruns once its store changes, as the ipo.iters test shows), and running it gives the new grid. The stages
    after it are left stale here: the torchrun test below reruns them all."""
    params = project / "params.yaml"
    original = params.read_text()
    p = yaml.safe_load(original)
    p["backbone"]["resolution"] = 84
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    try:
        status = run(["dvc", "status", "--json"], project)
    finally:
        params.write_text(original)
    # no other store; export's model card carries the hash of every param its head depends on
    assert set(json.loads(status[status.index("{"):])) == {"extract_train", "export"}
    out = run(["dvc", "exp", "run", "-S", "backbone.resolution=84", "extract_train"], project)
    assert ran(out) == {"extract_train"}
    assert FeatureStore(project / "data/features/train.zarr").grid == (6, 6)


def test_the_whole_pipeline_runs_under_torchrun_with_two_processes(project):
    """The README's multi-GPU line with 2 CPU processes (gloo): both ranks write shards, the head trains
    under DDP, evaluate and report finish."""
    out = run(["dvc", "exp", "run", "-n", "torchrun", "-S", "backbone.resolution=98", "-S",
               "launch='torchrun --standalone --nproc_per_node=2 --no-python'"], project)
    # a new training store (7 x 7 grid): rank 0 writes shards 0 and 2, rank 1 shard 1; the evaluation
    # store's settings did not change, so both ranks find it complete (nothing to do), and the baselines'
    # maps, which depend on that store only, are not recomputed
    assert ran(out) == ALL_STAGES - {"demo_data@demo", "plots_page"} and UP_TO_DATE in out
    assert "3 shards (2 written by rank 0)" in out and "3 shards (1 written by rank 1)" in out
    assert FeatureStore(project / "data/features/train.zarr").grid == (7, 7)
    assert "on 2 process(es)" in out
    assert set(json.loads((project / "metrics/results.json").read_text())["demo"]) == {
        "cls", "kmeans", "ncut", "ncut_ipo", "head"}


def test_inference_views_and_self_training_rerun_only_what_they_must(project):
    """More views extract only the new ones and rerun the head's maps, never the baselines' (the base
    store is unchanged); a second round retrains from the round-1 head, never round 1 itself."""
    base = project / "data/features/eval/demo.zarr"
    before = FeatureStore(base).attrs["fingerprint"]
    out = run(["dvc", "exp", "run", "-n", "views", "-S", "predict.hflip=true", "-S", "predict.resolutions=[112,56]"],
              project)
    assert ran(out) == {"extract_eval@demo", "extract_views@demo", "export", "predict@demo", "evaluate@demo", "report"}
    assert UP_TO_DATE in out
    assert FeatureStore(base).attrs["fingerprint"] == before
    assert sorted(p.name for p in (project / "data/features/eval/demo.views").glob("*.zarr")) == [
        "112-hflip.zarr", "56-hflip.zarr", "56.zarr"]
    out = run(["dvc", "exp", "run", "-n", "rounds", "-S", "train.rounds=2"], project)
    assert ran(out) == {"self_train", "export", "predict@demo", "evaluate@demo", "report"} and UP_TO_DATE in out
    log = pd.read_csv(project / "plots/self_train_loss.csv")
    assert len(log) > 0 and set(log["round"]) == {2}


def test_without_a_feature_cache_the_eval_stores_go_and_a_new_head_reruns_the_forwards(project):
    """predict.cache_features=false: the evaluation stores are removed and every map is kept (its
    inputs' fingerprints are the same); a training experiment then reruns the head's forwards from the images."""
    results = json.loads((project / "metrics/results.json").read_text())
    out = run(["dvc", "exp", "run", "-n", "nocache", "-S", "predict.cache_features=false"], project)
    assert ran(out) == {"extract_eval@demo", "extract_views@demo", "predict@demo"}
    assert "head: up to date" in out and UP_TO_DATE in out
    assert list((project / "data/features/eval/demo.zarr").iterdir()) == []
    assert not list((project / "data/features/eval/demo.views").glob("*.zarr"))
    assert json.loads((project / "metrics/results.json").read_text()) == results
    out = run(["dvc", "exp", "run", "-n", "nocache-seed", "-S", "train.seed=1"], project)
    assert ran(out) == {"train", "self_train", "export", "predict@demo", "evaluate@demo", "report"} and UP_TO_DATE in out
    assert "head: written" in out and "features from the images" in out


def test_spread_groups_experiments_that_differ_only_in_the_seed(project):
    """nocache and nocache-seed differ in train.seed only: one setup of two runs, the mean and sample
    standard deviation of their results; the baseline (other params) is a setup of its own."""
    import dvc.api

    out = run(["selfment", "spread", "nocache", "nocache-seed", "--method", "head", "--metric", "iou"], project)
    assert "2 runs in 1 setups (repeats differ in train.seed)" in out
    [row] = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if "| demo" in line]
    iou = [json.loads(dvc.api.read("metrics/results.json", repo=str(project), rev=rev))["demo"]["head"]["iou"]
           for rev in ("nocache", "nocache-seed")]
    mean, std = 100 * (iou[0] + iou[1]) / 2, 100 * abs(iou[0] - iou[1]) / 2 ** 0.5
    assert row[0] == "(one setup)" and row[4:6] == ["2", f"{mean:.1f} ± {std:.1f}"]
    out = run(["selfment", "spread", "nocache", "nocache-seed", "baseline", "--method", "head"], project)
    assert "3 runs in 2 setups" in out and out.count("| demo") == 2 * 5


def test_after_a_committed_baseline_an_ncut_experiment_in_a_fresh_copy_reruns_ncut_and_ipo_only(project):
    """Last (it commits the workspace): an ncut.* experiment in a fresh copy of the repository (--temp, as a
    queued one) finds CLS and k-means kept (from DVC's cache) and the stores shared (linked, not extracted), and
    reruns NCut and IPO."""
    import dvc.api

    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "baseline"], project)
    out = run(["dvc", "exp", "run", "--temp", "-n", "tau", "-S", "ncut.tau=0.3"], project)
    assert "shared store" in out and "(0 written by rank 0)" in out and "written by rank 0)" in out
    n = json.loads((project / "metrics/pseudo_masks.json").read_text())["n_images"]
    tau = json.loads(dvc.api.read("metrics/pseudo_masks.json", repo=str(project), rev="tau"))
    assert tau["computed"] == {"ncut_solved": n, "ipo_run": n, "cls_run": 0, "kmeans_run": 0}
    assert "computed: ncut, ncut_ipo, kept: cls, kmeans" in out
