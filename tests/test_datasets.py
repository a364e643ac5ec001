import random

import numpy as np
import pytest
from PIL import Image

from pipeline.core.datasets import DatasetError, load_image, load_mask, resolve, sample_subset, training_set, validate
from pipeline.core.params import DatasetSpec, TrainData
from pipeline.core.presets import PRESETS


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_finds_its_official_layout(tmp_path, write_pairs, preset):
    images, masks = PRESETS[preset][0]
    write_pairs(tmp_path, n=3, images=images, masks=masks)
    samples = resolve(DatasetSpec(root=str(tmp_path), preset=preset))
    assert [s.stem for s in samples] == ["im00", "im01", "im02"]
    assert all(s.image.parent == tmp_path / images and s.mask.parent == tmp_path / masks for s in samples)


def test_preset_falls_back_to_a_common_layout_and_reports_what_it_tried(tmp_path, write_pairs):
    write_pairs(tmp_path / "a", n=2, images="Imgs", masks="GT")
    assert len(resolve(DatasetSpec(root=str(tmp_path / "a"), preset="ECSSD"))) == 2
    with pytest.raises(DatasetError, match=r"no HKU-IS layout found \(tried imgs/ \+ gt/"):
        resolve(DatasetSpec(root=str(tmp_path), preset="HKU-IS"))


def test_generic_layout_pairs_by_stem_and_masks_are_optional(tmp_path, write_pairs):
    write_pairs(tmp_path, n=3)
    (tmp_path / "masks" / "im01.png").rename(tmp_path / "masks" / "im01.PNG")
    s = resolve(DatasetSpec(root=str(tmp_path), images="images", masks="masks"))
    assert [x.mask.name for x in s] == ["im00.png", "im01.PNG", "im02.png"]
    assert all(x.mask is None for x in resolve(DatasetSpec(root=str(tmp_path), images="images")))


@pytest.mark.parametrize("break_it, message", [
    (lambda r: (r / "masks" / "im01.png").unlink(), r"images/im01.jpg: no mask named im01"),
    (lambda r: Image.new("L", (5, 5)).save(r / "masks" / "extra.png"), r"masks/extra.png: mask has no image"),
    (lambda r: [p.unlink() for p in (r / "images").iterdir()], r"images: no images found"),
])
def test_folder_problems_name_the_file(pairs, break_it, message):
    break_it(pairs)
    with pytest.raises(DatasetError, match=message):
        resolve(DatasetSpec(root=str(pairs), images="images", masks="masks"))


@pytest.mark.parametrize("break_it, message", [
    (lambda r: (r / "images" / "im02.jpg").write_bytes((r / "images" / "im02.jpg").read_bytes()[:300]),
     r"im02.jpg: unreadable or truncated image"),
    (lambda r: (r / "images" / "im03.jpg").write_bytes(b"not an image"), r"im03.jpg: unreadable or truncated"),
    (lambda r: Image.new("L", (61, 45)).save(r / "masks" / "im01.png"),
     r"masks/im01.png: mask is 61x45 but its image is 60x45"),
    (lambda r: Image.new("RGB", (60, 10)).save(r / "images" / "im04.jpg"),
     r"im04.jpg: image is 60x10, smaller than one 14-px patch"),
])
def test_bad_pairs_fail_validation_with_one_line_naming_the_file(pairs, break_it, message):
    break_it(pairs)
    samples = resolve(DatasetSpec(root=str(pairs), images="images", masks="masks"))
    with pytest.raises(DatasetError, match=message) as exc:
        validate(samples, min_side=14)
    assert "\n" not in str(exc.value)


def test_valid_dataset_passes_validation(pairs):
    validate(resolve(DatasetSpec(root=str(pairs), images="images", masks="masks")), min_side=14)
    with pytest.raises(DatasetError, match="empty"):
        validate([])


def test_image_modes_are_converted_not_rejected(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    rgba[0, 0, 3] = 0  # fully transparent pixel composites onto black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((4, 4), 90, np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray(np.full((4, 4), 30, np.uint8)).convert("P").save(tmp_path / "pal.png")
    for name in ("rgba", "gray", "g16", "pal"):
        x = load_image(tmp_path / f"{name}.png")
        assert x.shape == (4, 4, 3) and x.dtype == np.uint8, name
    assert tuple(load_image(tmp_path / "rgba.png")[1, 1]) == (200, 0, 0)
    assert tuple(load_image(tmp_path / "rgba.png")[0, 0]) == (0, 0, 0)
    assert tuple(load_image(tmp_path / "gray.png")[0, 0]) == (90, 90, 90)
    assert tuple(load_image(tmp_path / "g16.png")[0, 0]) == (255, 255, 255)


def test_masks_are_binarised_at_128_including_16_bit_and_palette(tmp_path):
    Image.fromarray(np.array([[0, 127, 128, 255]], np.uint8)).save(tmp_path / "m.png")
    assert load_mask(tmp_path / "m.png").tolist() == [[False, False, True, True]]
    Image.fromarray(np.array([[0, 32000, 33000, 65535]], np.uint16)).save(tmp_path / "m16.png")
    assert load_mask(tmp_path / "m16.png").tolist() == [[False, False, True, True]]
    Image.fromarray(np.array([[0, 255]], np.uint8)).convert("P").save(tmp_path / "mp.png")
    assert load_mask(tmp_path / "mp.png").tolist() == [[False, True]]


def test_training_sample_is_the_official_codes_sample(tmp_path, write_pairs):
    write_pairs(tmp_path, n=12)
    samples = resolve(DatasetSpec(root=str(tmp_path), images="images", masks="masks"))
    expected = random.Random(111).sample(sorted(str(s.image) for s in samples), 5)
    assert [str(s.image) for s in sample_subset(samples, 5, 111)] == expected
    assert sample_subset(samples, 50, 111) == samples  # fewer images than asked: all of them
    spec = DatasetSpec(root=str(tmp_path), images="images", masks="masks")
    chosen, total = training_set(TrainData(dataset=spec, sample_size=5, sample_seed=111))
    assert [str(s.image) for s in chosen] == expected and total == 12


@pytest.mark.real
def test_shared_duts_tr_is_found_by_its_preset(shared_duts):
    samples = resolve(DatasetSpec(root=str(shared_duts), preset="DUTS-TR"))
    assert len(samples) == 3000 and all(s.mask.suffix == ".png" for s in samples)


def test_a_dataset_image_with_an_exif_rotation_keeps_its_stored_pixels_the_grid_of_its_mask(pairs):
    """Benchmark masks are drawn on the stored pixel array: a dataset image is read as stored (no EXIF
    orientation), so a mask of the raw size validates and the two align (segment, for photos, orients)."""
    image = next((pairs / "images").iterdir())
    raw = Image.open(image).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers show it turned by 90 degrees
    raw.save(image, exif=exif)
    samples = resolve(DatasetSpec(root=str(pairs), images="images", masks="masks"))
    validate(samples)
    sample = next(s for s in samples if s.image == image)
    assert load_image(sample.image).shape[:2] == load_mask(sample.mask).shape == (raw.height, raw.width)
