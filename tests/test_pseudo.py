"""Pseudo-masks of a store (every method, NCut/IPO statistics), their merge across chunks, their quality
against ground truth, the IPO convergence curve, and the saliency maps of every method."""
import numpy as np
import pytest
from PIL import Image

from pipeline.bipartition.kept import load_kept, method_keys, save_kept, split_kept
from pipeline.bipartition.methods import bipartitions
from pipeline.bipartition.pseudo import convergence, mask_map, merge, pseudo_masks, quality
from pipeline.core.params import METHODS, IPOParams, NCutParams


class ToyStore:
    """The part of FeatureStore that pseudo_masks reads: planted grids of known masks."""

    def __init__(self, planted, n=3):
        self.items = [planted(seed=s) for s in range(n)]
        self.grid = self.items[0][1].shape

    def features(self, i):
        return self.items[i][0]

    def cls(self, i):
        return np.eye(self.items[i][0].shape[-1], dtype=np.float32)[1]

    def sizes(self):
        return np.array([[24, 36]] * len(self.items))


@pytest.fixture
def store(planted):
    return ToyStore(planted)


def test_chunks_merge_into_the_whole_run_and_every_method_recovers_the_planted_mask(store, tmp_path):
    whole = pseudo_masks(store, [0, 1, 2], NCutParams(), IPOParams(), 0)
    parts = merge([pseudo_masks(store, [0], NCutParams(), IPOParams(), 0),
                   pseudo_masks(store, [1, 2], NCutParams(), IPOParams(), 0)])
    assert set(whole) == set(METHODS)
    for m in METHODS:
        for k in whole[m]:
            np.testing.assert_array_equal(parts[m][k], whole[m][k])
        assert whole[m]["masks"].shape == (3, 12, 12)
        truth = np.stack([mask for _, mask in store.items])
        assert (whole[m]["masks"] != truth).sum() <= (0 if m.startswith("ncut") else 2), m
    assert whole["ncut_ipo"]["changed"].shape == (3, 20) and not whole["ncut"]["degenerate"].any()
    ref = bipartitions(store.features(2), store.cls(2))
    np.testing.assert_allclose(whole["ncut"]["eigenvalues"][2], ref.fiedler.eigenvalues[:2])


def test_ipo_from_kept_ncut_masks_equals_ipo_after_solving_ncut(store, monkeypatch):
    import pipeline.bipartition.methods as methods

    ipo_p = IPOParams(iters=4)
    whole = pseudo_masks(store, [0, 1, 2], NCutParams(), ipo_p, 0)
    monkeypatch.setattr(methods, "ncut", lambda *a, **k: pytest.fail("NCut solved"))
    # planted masks differ from NCut's nowhere here: start IPO from a changed mask to see it is the one used
    start = whole["ncut"]["masks"].copy()
    only = pseudo_masks(store, [0, 1, 2], NCutParams(), ipo_p, 0, methods=("ncut_ipo",), ncut_masks=start)
    assert set(only) == {"ncut_ipo"}
    for k in whole["ncut_ipo"]:
        np.testing.assert_array_equal(only["ncut_ipo"][k], whole["ncut_ipo"][k])
    start[0] = ~start[0]  # a reversed start: orientation consistency keeps its reversed labels
    moved = pseudo_masks(store, [0], NCutParams(), ipo_p, 0, methods=("ncut_ipo",), ncut_masks=start[:1])
    assert (moved["ncut_ipo"]["masks"][0] != whole["ncut_ipo"]["masks"][0]).all()


def test_kept_masks_are_found_only_for_their_own_key_and_images(store, tmp_path):
    keys = method_keys("store", NCutParams(), IPOParams(), 0)
    assert len(set(keys.values())) == 4
    other = method_keys("store", NCutParams(), IPOParams(iters=3), 0)  # an ipo.* change: NCut + IPO's key only
    assert {m for m in METHODS if other[m] != keys[m]} == {"ncut_ipo"}
    assert {m for m in METHODS if method_keys("store", NCutParams(tau=0.3), IPOParams(), 0)[m] != keys[m]} == {
        "ncut", "ncut_ipo"}
    assert {m for m in METHODS if method_keys("store", NCutParams(), IPOParams(), 1)[m] != keys[m]} == {"kmeans"}
    assert {m for m in METHODS if method_keys("other", NCutParams(), IPOParams(), 0)[m] != keys[m]} == set(METHODS)
    result = pseudo_masks(store, [0, 1, 2], NCutParams(), IPOParams(), 0)
    stems = ["a", "b", "c"]
    for m in ("ncut", "cls"):
        save_kept(tmp_path, m, keys[m], stems, result[m])
    kept, todo = split_kept(tmp_path, keys, stems)
    assert set(kept) == {"ncut", "cls"} and todo == ["kmeans", "ncut_ipo"]
    np.testing.assert_array_equal(kept["ncut"]["eigenvalues"], result["ncut"]["eigenvalues"])
    assert load_kept(tmp_path, "ncut", other["ncut_ipo"], stems) is None        # another key
    assert load_kept(tmp_path, "ncut", keys["ncut"], ["a", "b", "x"]) is None   # other images
    (tmp_path / "cls.npz").write_bytes(b"not a zip")                              # damaged: computed again
    assert split_kept(tmp_path, keys, stems)[1] == ["cls", "kmeans", "ncut_ipo"]
    save_kept(tmp_path, "ncut", keys["ncut"], stems, result["ncut"])
    first = (tmp_path / "ncut.npz").read_bytes()
    save_kept(tmp_path, "ncut", keys["ncut"], stems, result["ncut"])
    assert (tmp_path / "ncut.npz").read_bytes() == first  # the same arrays, the same bytes (DVC sees no change)


def test_quality_scores_the_upsampled_masks_against_ground_truth(store, tmp_path):
    gt = []
    for i, (_, mask) in enumerate(store.items):
        path = tmp_path / f"gt{i}.png"
        Image.fromarray(np.kron(mask, np.ones((2, 3))).astype(np.uint8) * 255).save(path)  # 24 x 36
        gt.append(path)
    q = quality(pseudo_masks(store, [0, 1, 2], NCutParams(), IPOParams(), 0, gt))
    assert set(q) == set(METHODS) and set(q["ncut"]) == {"fmax_dataset", "fmax_image", "fmax_toolbox", "iou", "acc"}
    # the exact mask, upsampled bilinearly, is scored against its nearest-neighbour upsampling
    assert q["ncut_ipo"]["iou"] > 0.8 and q["ncut_ipo"]["acc"] > 0.95
    assert quality(pseudo_masks(store, [0], NCutParams(), IPOParams(), 0)) == {}  # no ground truth


def test_convergence_curve_is_the_mean_over_images_per_iteration():
    result = {"changed": np.array([[4, 0, 0], [2, 2, 0]]), "fg_fraction": np.array([[0.5, 0.5, 0.5], [0.1, 0.3, 0.3]]),
              "flipped": np.array([[True, False, False], [False, False, False]])}
    c = convergence(result)
    assert c["iteration"].tolist() == [1, 2, 3]
    assert c["mean_changed"].tolist() == [3.0, 1.0, 0.0] and c["flip_rate"].tolist() == [0.5, 0.0, 0.0]
    np.testing.assert_allclose(c["fg_fraction"], [0.3, 0.4, 0.4])


def test_mask_maps_are_full_size_and_upsampled_like_probabilities(store):
    maps = {m: mask_map(b, (24, 36)) for m, b in bipartitions(store.features(0), store.cls(0)).masks.items()}
    assert all(m.shape == (24, 36) for m in maps.values())
    np.testing.assert_array_equal(maps["ncut"], mask_map(store.items[0][1], (24, 36)))
    assert set(np.unique(mask_map(np.ones((2, 2), bool), (5, 5)))) == {1.0}
