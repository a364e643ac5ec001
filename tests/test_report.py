"""Result tables (conventions in their own columns, SOD as percentages) and qualitative panels."""
import io

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.evaluation.report import (
    COD_COLUMNS,
    SOD_COLUMNS,
    line_figure,
    mask_image,
    panel,
    pick_examples,
    pr_figure,
    resolution_figure,
    resolution_table,
    results_table,
    to_markdown,
)


def scores(value: float) -> dict:
    return {k: value for k in (*SOD_COLUMNS, *COD_COLUMNS)}


def test_table_rows_are_dataset_x_method_in_the_papers_order_with_every_column():
    results = {"ECSSD": {"n_images": 2, "head": scores(0.9), "ncut": scores(0.5)},
               "CAMO": {"n_images": 1, "ncut_ipo": scores(0.7)}}
    table = results_table(results)
    assert list(table.index) == [("ECSSD", "NCut"), ("ECSSD", "Selfment head"), ("CAMO", "NCut + IPO")]
    assert list(table.columns) == [*SOD_COLUMNS.values(), *COD_COLUMNS.values()]
    assert table.loc[("ECSSD", "Selfment head"), "F_max (B, per-image)"] == 0.9
    assert "F_max (A, dataset)" in table.columns and "maxFm (C)" in table.columns  # never merged


def test_cod_columns_appear_only_when_some_set_has_them():
    sod_only = {k: 0.5 for k in SOD_COLUMNS}
    assert list(results_table({"DUTS-TE": {"head": sod_only}}).columns) == list(SOD_COLUMNS.values())
    mixed = results_table({"DUTS-TE": {"head": sod_only}, "CAMO": {"head": scores(0.7)}})
    assert list(mixed.columns) == [*SOD_COLUMNS.values(), *COD_COLUMNS.values()]
    assert mixed.loc[("DUTS-TE", "Selfment head"), "S_m"] != mixed.loc[("DUTS-TE", "Selfment head"), "S_m"]  # NaN
    assert mixed.loc[("CAMO", "Selfment head"), "S_m"] == 0.7


def test_markdown_shows_sod_columns_as_percentages_and_cod_as_fractions():
    md = to_markdown(results_table({"DUTS-TE": {"head": scores(0.8512)}}))
    header, row = md.splitlines()[0], next(line for line in md.splitlines() if "Selfment head" in line)
    assert [c.strip() for c in header.strip("|").split("|")][:3] == ["dataset", "method", "F_max (B, per-image)"]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["DUTS-TE", "Selfment head"]  # set and method in columns of their own, as a paper's table
    assert cells[2:7] == ["85.1"] * 5 and cells[7:] == ["0.851"] * len(COD_COLUMNS)


def test_markdown_shows_each_intervals_bounds_in_the_columns_scale():
    table = results_table({"DUTS-TE": {"head": scores(0.8512), "ncut": {k: 0.5 for k in SOD_COLUMNS}}})
    md = to_markdown(table, {"DUTS-TE": {"head": {"iou": [0.8401, 0.8633], "sm": [0.81, 0.9]}}})
    row = next(line for line in md.splitlines() if "Selfment head" in line)
    cells = dict(zip(["dataset", "method", *table.columns], [c.strip() for c in row.strip("|").split("|")]))
    assert cells["IoU"] == "85.1 [84.0, 86.3]" and cells["S_m"] == "0.851 [0.810, 0.900]"  # value and bounds alike
    assert cells["Acc"] == "85.1"  # no interval given: the value alone
    ncut = next(line for line in md.splitlines() if "NCut" in line)
    assert ncut.count("50.0") == 5 and "nan" not in ncut  # its COD cells are empty


def test_panel_has_uniform_cells_a_header_and_row_labels():
    wide, tall = Image.new("RGB", (40, 20), (255, 0, 0)), Image.new("RGB", (10, 40), (0, 0, 255))
    mask = mask_image(np.array([[True, False]]))
    assert np.asarray(mask).tolist() == [[255, 0]]
    out = panel([[wide, tall], [mask, wide]], ["image", "map"], ["success\nim01", "failure\nim02"], cell=40, gap=4)
    assert out.size == (120 + 2 * 44, 20 + 2 * 44)
    px = np.asarray(out).astype(int)
    assert px[20 + 20, 120 + 20].tolist() == [255, 0, 0]        # wide image fills its cell's width ...
    assert px[20 + 2, 120 + 20].tolist() == [255, 255, 255]     # ... centred, white above
    assert px[20 + 20, 164 + 20].tolist() == [0, 0, 255]        # tall image centred in the next cell
    assert px[20 + 20, 164 + 2].tolist() == [255, 255, 255]
    assert (px[:18, 120:160] < 128).any() and (px[20:60, :100] < 128).any()  # header and row label drawn


def test_examples_are_the_best_and_worst_by_score_without_repeats():
    s = pd.Series({"a": 0.9, "b": 0.1, "c": 0.5, "d": 0.9})
    assert pick_examples(s, 1) == [("a", "best"), ("b", "worst")]
    assert pick_examples(s, 2) == [("a", "best"), ("d", "best"), ("b", "worst"), ("c", "worst")]
    assert pick_examples(pd.Series({"a": 1.0}), 2) == [("a", "best")]


def test_resolution_table_groups_the_same_data_at_several_resolutions():
    results = {f"r{r}": {"head": scores(r / 1000), "ncut": scores(1 - r / 1000)} for r in (448, 756)}
    results["other"] = {"head": scores(0.5)}
    data = {"r448": "DUTS-TE, first 200", "r756": "DUTS-TE, first 200", "other": "ECSSD"}
    table = resolution_table(results, data, {"r448": 448, "r756": 756, "other": 756})
    assert list(table.index) == [("DUTS-TE, first 200", 448, "NCut"), ("DUTS-TE, first 200", 448, "Selfment head"),
                                 ("DUTS-TE, first 200", 756, "NCut"), ("DUTS-TE, first 200", 756, "Selfment head")]
    assert table.loc[("DUTS-TE, first 200", 756, "Selfment head"), "IoU"] == 0.756
    assert resolution_table({"other": results["other"]}, data, {"other": 756}).empty


def test_figures_are_png_images():
    curve = pd.DataFrame({"recall": [1.0, 0.5, 0.0], "precision": [0.3, 0.8, 0.0], "f_a": [0.4, 0.7, 0.0]})
    results = {f"r{r}": {"head": scores(r / 1000)} for r in (448, 756)}
    res = resolution_table(results, {"r448": "d", "r756": "d"}, {"r448": 448, "r756": 756})
    for png in (pr_figure({"head": curve, "ncut": curve}, "t"), resolution_figure(res, "d"),
                line_figure(pd.DataFrame({"step": range(10), "loss": np.linspace(1, 0, 10)}), "step", ["loss"],
                            "t", "loss", smooth=3)):
        im = Image.open(io.BytesIO(png))
        assert im.format == "PNG" and im.size == (600, 450)
        assert len(np.unique(np.asarray(im.convert("L")))) > 10  # something is drawn
