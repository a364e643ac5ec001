"""Crash-safe writes and per-image tables (pipeline/core/files.py)."""
import pandas as pd

from pipeline.core.files import atomic_write, read_image_table

STEMS = ["0001", "0010", "223061", "12", "1.5", "a b", "ü", "NA", "nan", "1e5"]


def test_per_image_tables_keep_every_stem_as_the_file_names_it(tmp_path):
    path = tmp_path / "t.images.csv"
    table = pd.DataFrame({"stem": STEMS, "head_iou": [i / 10 for i in range(len(STEMS))]})
    atomic_write(path, lambda f: table.to_csv(f, index=False, float_format="%.6f"))
    back = read_image_table(path)
    assert list(back.index) == STEMS
    assert back.loc["0001", "head_iou"] == 0.0 and back.loc["NA", "head_iou"] == 0.7
    assert back["head_iou"].dtype == float
