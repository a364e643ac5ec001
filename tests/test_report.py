"""Result tables (conventions in their own columns, SOD as percentages) and qualitative panels."""
import numpy as np
from PIL import Image

from pipeline.report import COD_COLUMNS, SOD_COLUMNS, mask_image, panel, results_table, to_markdown


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


def test_markdown_shows_sod_columns_as_percentages_and_cod_as_fractions():
    md = to_markdown(results_table({"DUTS-TE": {"head": scores(0.8512)}}))
    row = next(line for line in md.splitlines() if "Selfment head" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == ["85.120"] * 4 and cells[5:] == ["0.851"] * len(COD_COLUMNS)


def test_panel_tiles_rows_at_one_height_with_gaps():
    red = Image.new("RGB", (20, 10), (255, 0, 0))
    mask = mask_image(np.array([[True, False]]))
    assert np.asarray(mask).tolist() == [[255, 0]]
    out = panel([[red, mask], [red]], height=16, gap=2)
    assert out.size == (32 + 2 + 32, 16 + 2 + 16)  # 20x10 -> 32x16, 2x1 -> 32x16
    px = np.asarray(out)
    assert px[0, 0].tolist() == [255, 0, 0] and px[0, 33].tolist() == [255, 255, 255]  # tile, gap
    assert px[0, 34].tolist() == [255, 255, 255] and px[0, 65].tolist() == [0, 0, 0]  # mask: white, black
    assert px[20, 40].tolist() == [255, 255, 255]  # the short second row is padded white
