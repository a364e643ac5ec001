"""Pseudo-masks of a store (every method, NCut/IPO statistics), their merge across chunks, their quality
against ground truth, the IPO convergence curve, and the saliency maps of every method."""
import numpy as np
import pytest
from PIL import Image

from pipeline.bipartition.methods import all_methods
from pipeline.bipartition.pseudo import bipartition_maps, convergence, mask_map, merge, pseudo_masks, quality
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
    for k in whole:
        if k != "scores":
            np.testing.assert_array_equal(parts[k], whole[k])
    for m in METHODS:
        assert whole[m].shape == (3, 12, 12)
        truth = np.stack([mask for _, mask in store.items])
        assert (whole[m] != truth).sum() <= (0 if m.startswith("ncut") else 2), m
    assert whole["changed"].shape == (3, 20) and not whole["degenerate"].any()
    ref = all_methods(store.features(2), store.cls(2))
    np.testing.assert_allclose(whole["eigenvalues"][2], ref.fiedler.eigenvalues[:2])


def test_quality_scores_the_upsampled_masks_against_ground_truth(store, tmp_path):
    gt = []
    for i, (_, mask) in enumerate(store.items):
        path = tmp_path / f"gt{i}.png"
        Image.fromarray(np.kron(mask, np.ones((2, 3))).astype(np.uint8) * 255).save(path)  # 24 x 36
        gt.append(path)
    q = quality(pseudo_masks(store, [0, 1, 2], NCutParams(), IPOParams(), 0, gt)["scores"])
    assert set(q) == set(METHODS) and set(q["ncut"]) == {"fmax_dataset", "fmax_image", "fmax_toolbox", "iou", "acc"}
    # the exact mask, upsampled bilinearly, is scored against its nearest-neighbour upsampling
    assert q["ncut_ipo"]["iou"] > 0.8 and q["ncut_ipo"]["acc"] > 0.95
    assert quality({"ncut": []}) == {}


def test_convergence_curve_is_the_mean_over_images_per_iteration():
    result = {"changed": np.array([[4, 0, 0], [2, 2, 0]]), "fg_fraction": np.array([[0.5, 0.5, 0.5], [0.1, 0.3, 0.3]]),
              "flipped": np.array([[True, False, False], [False, False, False]])}
    c = convergence(result)
    assert c["iteration"].tolist() == [1, 2, 3]
    assert c["mean_changed"].tolist() == [3.0, 1.0, 0.0] and c["flip_rate"].tolist() == [0.5, 0.0, 0.0]
    np.testing.assert_allclose(c["fg_fraction"], [0.3, 0.4, 0.4])


def test_bipartition_maps_are_full_size_and_upsampled_like_probabilities(store):
    maps, fallback = bipartition_maps(store.features(0), store.cls(0), (24, 36), NCutParams(), IPOParams(), 0)
    assert not fallback
    assert set(maps) == set(METHODS) and all(m.shape == (24, 36) for m in maps.values())
    np.testing.assert_array_equal(maps["ncut"], mask_map(store.items[0][1], (24, 36)))
    assert set(np.unique(mask_map(np.ones((2, 2), bool), (5, 5)))) == {1.0}
