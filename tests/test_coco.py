"""COCO-style masks: the RLE decodes to the thresholded map exactly, area / box / score as computed by
hand, and pycocotools' own COCO API reads the document."""
import numpy as np
from pycocotools.coco import COCO

from pipeline.head.coco import annotate, decode, document


def test_an_annotation_is_the_thresholded_map_with_hand_computed_area_box_and_score():
    prob = np.zeros((4, 6), np.float32)
    prob[1, 2:5] = [0.6, 0.9, 0.5]   # 0.5 is not above the threshold
    prob[2, 3] = 0.75
    ann = annotate(prob, 0.5)
    np.testing.assert_array_equal(decode(ann["segmentation"]), prob > 0.5)
    assert ann["segmentation"]["size"] == [4, 6] and isinstance(ann["segmentation"]["counts"], str)
    assert ann["area"] == 3 and ann["bbox"] == [2.0, 1.0, 2.0, 2.0]  # x, y, w, h of columns 2-3, rows 1-2
    assert ann["score"] == round((0.6 + 0.9 + 0.75) / 3, 6)


def test_an_empty_mask_scores_zero_and_a_random_map_round_trips():
    empty = annotate(np.full((3, 5), 0.2, np.float32), 0.5)
    assert empty["area"] == 0 and empty["score"] == 0.0 and not decode(empty["segmentation"]).any()
    prob = np.random.default_rng(0).random((37, 53)).astype(np.float32)
    np.testing.assert_array_equal(decode(annotate(prob, 0.3)["segmentation"]), prob > 0.3)


def test_pycocotools_reads_the_document():
    rng = np.random.default_rng(1)
    probs = [rng.random((20, 30)).astype(np.float32), rng.random((25, 10)).astype(np.float32)]
    doc = document([("a.jpg", annotate(probs[0], 0.5)), ("b.png", annotate(probs[1], 0.5))], 0.5, "test")
    coco = COCO()
    coco.dataset = doc
    coco.createIndex()
    assert coco.getCatIds(catNms=["foreground"]) == [1]
    for k, prob in enumerate(probs, start=1):
        [ann_id] = coco.getAnnIds(imgIds=[k])
        assert (coco.imgs[k]["height"], coco.imgs[k]["width"]) == prob.shape
        np.testing.assert_array_equal(coco.annToMask(coco.anns[ann_id]) == 1, prob > 0.5)
