"""params.yaml carries the paper's constants; configs/paper.yaml is the paper scale with the same keys."""
from pathlib import Path

import yaml

from pipeline.datasets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
PAPER = yaml.safe_load((ROOT / "configs/paper.yaml").read_text())


def keys(d, prefix=""):
    out = set()
    for k, v in d.items():
        if isinstance(v, dict) and prefix + k not in ("data.eval", "data.train.dataset"):  # dataset specs vary
            out |= keys(v, f"{prefix}{k}.")
        else:
            out.add(prefix + k)
    return out


def test_paper_config_has_exactly_the_keys_of_params():
    assert keys(PAPER) == keys(PARAMS)


def test_paper_config_is_the_papers_setup():
    assert PAPER["backbone"]["name"] == "facebook/dinov3-vit7b16-pretrain-lvd1689m"
    assert PAPER["backbone"]["resolution"] == 768 and PAPER["backbone"]["dtype"] == "bfloat16"
    assert PAPER["data"]["train"]["dataset"]["preset"] == "DUTS-TR"
    assert set(PAPER["data"]["eval"]) == {"ECSSD", "DUTS-TE", "HKU-IS", "PASCAL-S", "CHAMELEON", "CAMO", "COD10K",
                                          "NC4K"}
    assert all(spec["preset"] in PRESETS for spec in PAPER["data"]["eval"].values())
    assert "--nproc_per_node=8" in PAPER["launch"]


def test_defaults_are_the_papers_constants():
    for p in (PARAMS, PAPER):
        assert p["data"]["train"]["sample_size"] == 1000 and p["data"]["train"]["sample_seed"] == 111
        assert p["ncut"]["tau"] == 0.2 and p["ncut"]["eps"] == 1e-5
        assert p["ipo"]["iters"] == 20
        assert (p["loss"]["w_con"], p["loss"]["w_dice"], p["loss"]["w_bce"]) == (0.1, 1.0, 1.0)
        assert p["loss"]["temperature"] == 0.05
        assert (p["train"]["lr"], p["train"]["epochs"], p["train"]["weight_decay"]) == (1e-3, 3, 1e-5)
        assert (p["head"]["hidden"], p["head"]["embed"]) == (128, 128)
        assert p["pseudo"]["method"] == "ncut_ipo"
