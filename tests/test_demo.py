import numpy as np
from click.testing import CliRunner
from PIL import Image

from pipeline.core.demo import make_demo, make_image
from stages.demo import demo_data


def test_demo_is_deterministic_and_varied():
    a = list(make_demo(12, seed=0))
    b = list(make_demo(12, seed=0))
    assert all(np.array_equal(x[1], y[1]) and np.array_equal(x[2], y[2]) for x, y in zip(a, b))
    assert not np.array_equal(make_image(1, 0)[0], a[0][1])
    fractions = [m.mean() for _, _, m in a]
    assert min(fractions) > 0.02 and max(fractions) < 0.8
    assert len({im.shape for _, im, _ in a}) >= 3  # varied sizes


def test_objects_differ_from_their_surroundings_at_the_mask_border():
    """The mask is exact: a ring just inside differs in colour statistics from a ring just outside."""
    from scipy.ndimage import binary_dilation, binary_erosion

    for _, image, mask in make_demo(8, seed=0):
        inner = mask & ~binary_erosion(mask, iterations=3)
        outer = binary_dilation(mask, iterations=3) & ~mask
        gap = np.abs(image[inner].mean(0) - image[outer].mean(0)).max()
        assert gap > 20


def test_stage_writes_images_and_binary_masks(tmp_path, write_params):
    params = write_params(tmp_path / "params.yaml", {"demo": {"n_images": 5, "seed": 0}})
    r = CliRunner().invoke(demo_data, ["--params", str(params), "--out", str(tmp_path / "demo")])
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "demo" / "images").iterdir())
    assert names == [f"demo_{i:03d}.png" for i in range(5)]
    m = np.asarray(Image.open(tmp_path / "demo" / "masks" / "demo_002.png"))
    assert set(np.unique(m)) == {0, 255}
    np.testing.assert_array_equal(m == 255, make_image(0, 2)[1])
