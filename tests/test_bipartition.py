"""Table 4 baselines (CLS, k-means) and every method of one grid."""
import numpy as np

from pipeline.bipartition.methods import bipartitions, border_share, cls_bipartition, kmeans_bipartition
from pipeline.core.params import NCutParams


def test_kmeans_and_cls_baselines_pick_the_object(planted):
    f, mask = planted()
    np.testing.assert_array_equal(kmeans_bipartition(f, seed=0), mask)
    cls = np.zeros(f.shape[-1], np.float32)
    cls[1] = 1  # a CLS token attending to the object
    np.testing.assert_array_equal(cls_bipartition(f, cls), mask)
    assert border_share(mask) == 0 and border_share(~mask) == 1


def test_every_method_shares_one_ncut(planted):
    f, mask = planted()
    out = bipartitions(f, np.eye(f.shape[-1], dtype=np.float32)[1], ncut_p=NCutParams(solver="lanczos"))
    assert set(out.masks) == {"cls", "kmeans", "ncut", "ncut_ipo"}
    for m in out.masks.values():
        np.testing.assert_array_equal(m, mask)
