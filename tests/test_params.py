"""The params schema: the paper's constants as defaults, every config valid, one-line errors naming the
key, the value and what is allowed, and stages that stop on bad params before any model is loaded."""
import copy
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline.core.params import METHODS, ParamsError, ParamsView, load_params, parse_params
from pipeline.core.presets import PRESETS
from pipeline.project.configure import PLOTS_MARKER, available, compose, with_pr_plots
from stages.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
PAPER = compose(CONFIGS, ["backbone/dinov3-vit7b16", "data/paper", "scale/paper"])[0]
BACKBONES = [p for p in available(CONFIGS) if p.startswith("backbone/")]
DATA = [["data/demo"], ["data/duts-te"], ["data/duts-te", "data/duts-te-resolution"], ["data/paper"]]


def test_params_yaml_is_the_default_composition_of_the_presets():
    load_params(ROOT / "params.yaml")
    assert compose(CONFIGS, ["backbone/dinov2-small", "data/demo"])[0] == PARAMS
    dvc_yaml = (ROOT / "dvc.yaml").read_text()
    assert with_pr_plots(dvc_yaml, PARAMS["data"]["eval"]) == dvc_yaml  # its PR plots are the demo set's


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("data", DATA, ids=lambda d: "+".join(d))
def test_every_composition_of_presets_is_valid(backbone, data):
    _, p = compose(CONFIGS, [backbone, *data, "scale/paper"], datasets="/data/sets")
    assert p.launch.startswith("torchrun") and p.backbone.name == yaml.safe_load(
        (CONFIGS / f"{backbone}.yaml").read_text())["backbone"]["name"]
    real = data != ["data/demo"]
    assert p.demo.write == ([] if real else ["demo"])  # no demo stage when every dataset is real
    assert all(s.root.startswith("/data/sets/") for s in p.data.eval.values()) == real


def test_configure_writes_params_and_refuses_unknown_presets(tmp_path):
    r = CliRunner().invoke(main, ["configure", "backbone/standin", "data/duts-te", "data/duts-te-resolution",
                                  "--configs", str(CONFIGS), "--datasets", "../shared/datasets",
                                  "--out", str(tmp_path / "p.yaml")])
    assert r.exit_code == 0, r.output
    p = load_params(tmp_path / "p.yaml")
    assert set(p.data.eval) == {"DUTS-TE", "DUTS-TE-200-448", "DUTS-TE-200-756", "DUTS-TE-200-1274"}
    assert p.data.eval["DUTS-TE-200-1274"].resolution == 1274 and p.data.eval["DUTS-TE-200-1274"].first == 200
    assert p.data.train.dataset.root == str(Path("../shared/datasets/DUTS-TR").resolve())  # absolute: the queue
    assert "dvc.yaml: none, so no PR plots were written" in r.output
    # beside a dvc.yaml: its top-level plots become one PR chart per evaluation set, the stages untouched
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    r = CliRunner().invoke(main, ["configure", "backbone/standin", "data/duts-te", "--configs", str(CONFIGS),
                                  "--out", str(tmp_path / "params.yaml")])
    assert r.exit_code == 0 and "PR plots of DUTS-TE" in r.output, r.output
    written = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    assert written["stages"] == yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    [chart] = written["plots"]
    assert chart["PR curves: DUTS-TE"]["y"]["plots/pr/DUTS-TE/ncut_ipo.csv"] == "precision"
    assert len(chart["PR curves: DUTS-TE"]["y"]) == len(METHODS) + 1  # every method and the head
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")  # no marker: refused before params.yaml is written
    before = (tmp_path / "params.yaml").read_text()
    r = CliRunner().invoke(main, ["configure", "backbone/standin", "data/demo", "--configs", str(CONFIGS),
                                  "--out", str(tmp_path / "params.yaml")])
    assert r.exit_code == 2 and PLOTS_MARKER.strip() in r.output
    assert (tmp_path / "params.yaml").read_text() == before
    r = CliRunner().invoke(main, ["configure", "backbone/dinov4", "--configs", str(CONFIGS),
                                  "--out", str(tmp_path / "q.yaml")])
    assert r.exit_code == 2 and "backbone/dinov4.yaml: no such preset (known: backbone/dino-vitb16, " in r.output
    assert "backbone/dinov2-small, " in r.output
    assert not (tmp_path / "q.yaml").exists()


def test_paper_config_is_the_papers_setup():
    p = parse_params(PAPER)
    assert p.backbone.name == "facebook/dinov3-vit7b16-pretrain-lvd1689m"
    assert p.backbone.resolution == 768 and p.backbone.dtype == "bfloat16"
    assert p.data.train.dataset.preset == "DUTS-TR"
    assert set(p.data.eval) == {"ECSSD", "DUTS-TE", "HKU-IS", "PASCAL-S", "CHAMELEON", "CAMO", "COD10K", "NC4K"}
    assert all(spec.preset in PRESETS for spec in p.data.eval.values())
    assert "--nproc_per_node=8" in p.launch
    # paper protocol: Table 1's F_max / IoU / Acc on the SOD sets, Table 2's COD metrics on the COD sets
    assert {n for n, s in p.data.eval.items() if s.scores_cod} == {"CHAMELEON", "CAMO", "COD10K", "NC4K"}


def test_a_set_can_ask_for_the_cod_metrics_or_drop_them():
    from pipeline.core.params import EvalSet

    assert EvalSet(root="x", images="i").scores_cod is False
    assert EvalSet(root="x", images="i", cod_metrics=True).scores_cod is True
    assert EvalSet(root="x", preset="CAMO", cod_metrics=False).scores_cod is False


@pytest.mark.parametrize("data", [PARAMS, PAPER], ids=["params", "paper"])
def test_defaults_are_the_papers_constants(data):
    p = parse_params(data)
    assert (p.data.train.sample_size, p.data.train.sample_seed) == (1000, 111)
    assert (p.ncut.tau, p.ncut.eps, p.ipo.iters) == (0.2, 1e-5, 20)
    assert (p.loss.w_con, p.loss.w_dice, p.loss.w_bce, p.loss.temperature) == (0.1, 1.0, 1.0, 0.05)
    assert (p.train.lr, p.train.epochs, p.train.weight_decay) == (1e-3, 3, 1e-5)
    assert (p.head.hidden, p.head.embed) == (128, 128)
    assert p.pseudo.method == "ncut_ipo" and set(METHODS) == {"cls", "kmeans", "ncut", "ncut_ipo"}
    assert (p.train.rounds, p.predict.hflip, len(p.predict.resolutions)) == (1, False, 1)  # one view, one round


def edited(path: str, value=None, delete=False) -> dict:
    data = copy.deepcopy(PARAMS)
    *parents, last = path.split(".")
    node = data
    for k in parents:
        node = node[k]
    if delete:
        del node[last]
    else:
        node[last] = value
    return data


BAD = [
    ("ncut.solver", "lanczoss", "params.yaml: ncut.solver = 'lanczoss': must be one of dense, lanczos"),
    ("loss.w_dic", 1.0, "params.yaml: loss.w_dic: unknown key (did you mean loss.w_dice?)"),
    ("ipo.iters", -1, "params.yaml: ipo.iters = -1: must be >= 1"),
    ("train.epochs", 0, "params.yaml: train.epochs = 0: must be >= 1"),
    ("loss.w_bce", -0.5, "params.yaml: loss.w_bce = -0.5: must be >= 0"),
    ("ncut.eps", 1.0, "params.yaml: ncut.eps = 1.0: must be > 0 and < 1"),
    ("ncut.tau", 1.0, "params.yaml: ncut.tau = 1.0: must be >= -1 and < 1"),
    ("data.train.sample_size", 0, "params.yaml: data.train.sample_size = 0: must be >= 1"),
    ("pseudo.method", "ncut+ipo", "params.yaml: pseudo.method = 'ncut+ipo': must be one of cls, kmeans, ncut, ncut_ipo"),
    ("data.eval.demo", {"root": "x"}, "params.yaml: data.eval.demo: needs either 'preset' or 'images'"),
    ("data.eval.demo", {"root": "x", "preset": "ECSD"}, "params.yaml: data.eval.demo.preset = 'ECSD': must be one of ECSSD,"),
    ("backbone.device", "gpu", "params.yaml: backbone.device = 'gpu': must be auto, cpu, mps, cuda or cuda:N"),
    ("store.compressor", {"name": "blosc", "cname": "zstd", "clevel": 12}, "store.compressor: blosc clevel must be 0..9"),
    ("ncut", 3, "params.yaml: ncut = 3: must be a mapping of keys"),
    ("predict.resolutions", [756, 756], "params.yaml: predict: resolutions [756, 756] repeat a value"),
    ("predict.resolutions", [756, 0], "params.yaml: predict.resolutions.1 = 0: must be > 0"),
    ("predict.resolutions", [], "params.yaml: predict.resolutions = []: List should have at least 1 item"),
    ("train.rounds", 0, "params.yaml: train.rounds = 0: must be >= 1"),
]


@pytest.mark.parametrize("path, value, message", BAD, ids=[b[0] for b in BAD])
def test_bad_values_give_one_line_naming_key_value_and_what_is_allowed(path, value, message):
    with pytest.raises(ParamsError) as err:
        parse_params(edited(path, value))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_every_key_must_be_spelled_out_and_all_loss_weights_zero_is_refused():
    with pytest.raises(ParamsError, match=r"^params.yaml: ncut.degenerate_tol: missing key"):
        parse_params(edited("ncut.degenerate_tol", delete=True))
    with pytest.raises(ParamsError, match=r"demo.write is \[\] but the datasets use \['data/demo'\]"):
        parse_params(edited("demo.write", []))
    zero = edited("loss", dict(PARAMS["loss"], w_bce=0, w_dice=0, w_con=0))
    with pytest.raises(ParamsError, match="nothing to train on"):
        parse_params(zero)
    assert parse_params(edited("ncut.eps", "1e-5")).ncut.eps == 1e-5  # YAML 1.1 reads 1e-5 as a string


def test_a_view_allows_declared_keys_and_runtime_fields_only():
    view = ParamsView(parse_params(PARAMS), frozenset({"ncut", "data.eval.demo", "backbone.name"}))
    assert view.ncut.tau == 0.2 and view.backbone.name == PARAMS["backbone"]["name"]
    assert view.backbone.workers == PARAMS["backbone"]["workers"]  # runtime: no effect on results
    assert view.data.eval["demo"].root == "data/demo"
    with pytest.raises(ParamsError, match="reads params key 'backbone.resolution' that it does not declare"):
        view.backbone.resolution
    with pytest.raises(ParamsError, match="reads params key 'loss.w_bce'"):
        view.loss.w_bce


@pytest.mark.parametrize("command", ["demo-data", "extract", "pseudo-masks", "train", "self-train", "predict",
                                     "evaluate", "report", "segment", "export"])
def test_every_stage_stops_on_bad_params_with_one_line_and_exit_2_before_loading_a_model(tmp_path, command):
    """The backbone and head paths would fail to load; the params error comes first."""
    bad = edited("ncut.solver", "lanczoss")
    bad["backbone"]["name"] = str(tmp_path / "no-such-model")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    args = {"demo-data": ["--out", "o"], "extract": ["--split", "train", "--out", "o"],
            "pseudo-masks": ["--features", ".", "--out", "o", "--grids", "g", "--metrics", "m", "--plot", "p"],
            "train": ["--features", ".", "--pseudo", "params.yaml", "--out", "o", "--loss-csv", "l"],
            "self-train": ["--features", ".", "--head", "params.yaml", "--out", "o", "--loss-csv", "l"],
            "predict": ["--maps", "bipartitions", "--features", ".", "--out", "o"],
            "evaluate": ["--name", "demo", "--predictions", ".", "--metrics", "m", "--pr", "p", "--per-image", "i",
                         "--scores", "s", "--intervals", "n"],
            "report": ["--metrics-dir", ".", "--predictions", ".", "--pr-dir", ".", "--ipo-csv", "params.yaml",
                       "--loss-csv", "params.yaml", "--tables", "t", "--summary", "s", "--intervals", "n",
                       "--resolution-csv", "r",
                       "--figures", "f", "--panels", "p"],
            "segment": ["x.png", "--head", "nope.safetensors", "--out", "o"],
            "export": ["--head", "params.yaml", "--out", "o"]}[command]
    r = CliRunner().invoke(main, [command, "--params", str(tmp_path / "params.yaml"), *args])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        f"error: {tmp_path / 'params.yaml'}: ncut.solver = 'lanczoss': must be one of dense, lanczos"]
