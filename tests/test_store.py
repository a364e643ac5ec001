"""The sharded Zarr feature store: shards owned by ranks, completeness, rebuilds, never a user's folder."""
import numpy as np
import pytest

from pipeline.core.params import CompressorParams
from pipeline.features.store import FeatureStore, StoreError, StoreSpec, StoreWriter, check_store_path, shards_for_rank


def spec(n=4, ips=2, grid=(4, 4), dim=32) -> StoreSpec:
    return StoreSpec(tuple(f"im{i:02d}" for i in range(n)), grid, dim, "tiny", 56, 14, "float32", ips,
                     CompressorParams(name="none"))


def fill(path, s: StoreSpec) -> None:
    w = StoreWriter(path, s)
    for k in range(s.n_shards):
        m = len(s.shard_range(k))
        w.write_shard(k, np.full((m, *s.grid, s.dim), k, np.float32), np.zeros((m, s.dim)), np.ones((m, 2)))
    w.finalize()


def test_finalize_refuses_missing_shards_and_reader_refuses_non_stores(tmp_path):
    w = StoreWriter(tmp_path / "f.zarr", spec())
    with pytest.raises(StoreError, match=r"shards \[0, 1\] are not written"):
        w.finalize()
    with pytest.raises(StoreError, match="incomplete"):
        FeatureStore(tmp_path / "f.zarr")
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore(tmp_path / "nothing.zarr")
    with pytest.raises(StoreError, match="non-finite"):
        w.write_shard(0, np.full((2, 4, 4, 32), np.inf), np.zeros((2, 32)), np.zeros((2, 2)))


def test_a_store_of_this_project_with_another_spec_is_rebuilt(tmp_path):
    fill(tmp_path / "f.zarr", spec())
    fill(tmp_path / "f.zarr", spec(grid=(2, 2)))
    assert FeatureStore(tmp_path / "f.zarr").grid == (2, 2)


def test_a_folder_that_is_not_a_store_is_never_overwritten(tmp_path):
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "thesis.txt").write_text("years of work")
    with pytest.raises(StoreError, match="thesis: exists and is not a selfment feature store; nothing was changed"):
        StoreWriter(user, spec())
    assert (user / "thesis.txt").read_text() == "years of work"
    assert check_store_path(tmp_path / "absent.zarr") == {}
    (tmp_path / "empty").mkdir()
    fill(tmp_path / "empty", spec())  # an empty folder is adopted


@pytest.mark.parametrize("n, world", [(1, 1), (5, 2), (7, 3), (2, 4)])
def test_ranks_own_disjoint_whole_shards_covering_all(n, world):
    parts = [shards_for_rank(n, r, world) for r in range(world)]
    assert sorted(k for p in parts for k in p) == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1




def test_a_shard_file_deleted_by_hand_is_refused_by_readers_and_rewritten_by_a_resumed_extraction(tmp_path):
    path, s = tmp_path / "f.zarr", spec(n=5)
    fill(path, s)
    before = FeatureStore(path).features(3).copy()
    (path / "features" / "c" / "1" / "0" / "0").unlink()  # zarr alone would read image 2-3 as zeros
    with pytest.raises(StoreError, match=r"f.zarr: files of 1 shard\(s\) are missing \(first: images 2-3\)"):
        FeatureStore(path)
    w = StoreWriter(path, s)
    assert w.pending_shards(list(range(s.n_shards))) == [1]
    fill(path, s)
    np.testing.assert_array_equal(FeatureStore(path).features(3), before)


def test_a_damaged_shard_is_refused_naming_the_store_and_images_and_extract_rewrites_exactly_it(tmp_path):
    """Flipped bits (read silently as other numbers without a codec) and a truncated copy: the reader
    stops at the first use of the damaged shard with one line; a resumed extraction rewrites those shards."""
    path, s = tmp_path / "f.zarr", spec(n=6)  # 3 shards of 2 images
    fill(path, s)
    before = [FeatureStore(path).features(i).copy() for i in range(6)]
    flipped = path / "features/c/1/0/0"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x10
    flipped.write_bytes(bytes(data))
    truncated = path / "cls/c/2/0"
    truncated.write_bytes(truncated.read_bytes()[:-7])
    store = FeatureStore(path)
    np.testing.assert_array_equal(store.features(1), before[1])  # shard 0 is intact and still readable
    with pytest.raises(StoreError, match=r"f.zarr: shard 1 \(images 2-3\) is damaged \(features/c/1/0/0 differs"):
        store.features(2)
    with pytest.raises(StoreError, match=r"f.zarr: shard 2 \(images 4-5\) is damaged \(cls/c/2/0 differs"):
        store.cls(0)
    assert StoreWriter(path, s).pending_shards([0, 1, 2]) == [1, 2]
    fill(path, s)
    store = FeatureStore(path)
    for i in range(6):
        np.testing.assert_array_equal(store.features(i), before[i])


def test_a_full_disk_stops_with_the_space_needed_and_a_rerun_resumes_to_the_same_store(tmp_path, monkeypatch):
    """ENOSPC part-way (the second shard's features file): one line naming the store, the images and the
    space still needed; only complete shards are marked done; after that the extraction resumes and the
    store equals an uninterrupted one."""
    import errno

    import zarr.storage._local as local

    s = spec(n=6)
    fill(tmp_path / "ref.zarr", s)
    real = local._put

    def full(path, value, exclusive=False):
        if "features/c/1" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, value, exclusive)

    monkeypatch.setattr(local, "_put", full)
    with pytest.raises(StoreError, match=r"f.zarr: disk full writing shard 1 \(images 2-3\): [\d.]+ GB free, up to "
                                         r"[\d.]+ GB more needed for the 4 images not written"):
        fill(tmp_path / "f.zarr", s)
    monkeypatch.setattr(local, "_put", real)
    assert StoreWriter(tmp_path / "f.zarr", s).pending_shards([0, 1, 2]) == [1, 2]
    fill(tmp_path / "f.zarr", s)
    a, b = FeatureStore(tmp_path / "ref.zarr"), FeatureStore(tmp_path / "f.zarr")
    for i in range(6):
        np.testing.assert_array_equal(a.features(i), b.features(i))
    np.testing.assert_array_equal(a.sizes(), b.sizes())


def test_a_real_full_disk_stops_with_one_line_and_a_rerun_on_freed_space_gives_the_same_store(tmp_path, small_disk):
    """The same on a tmpfs too small for the store (the kernel's own ENOSPC, wherever zarr meets it): the
    error names the store, complete shards stay done, and with space freed the extraction resumes to the
    store of an uninterrupted run."""
    s = spec(n=6, grid=(16, 16), dim=64)  # 64 KiB of features per shard
    fill(tmp_path / "ref.zarr", s)
    disk = small_disk(160)
    with pytest.raises(StoreError, match=r"f.zarr: disk full writing shard \d \(images \d-\d\): [\d.]+ GB free"):
        fill(disk / "f.zarr", s)
    pending = StoreWriter(disk / "f.zarr", s, create=False).pending_shards([0, 1, 2], verify=True)
    assert 0 < len(pending) < 3
    small_disk.grow(1024)
    fill(disk / "f.zarr", s)
    a, b = FeatureStore(tmp_path / "ref.zarr"), FeatureStore(disk / "f.zarr")
    for i in range(6):
        np.testing.assert_array_equal(a.features(i), b.features(i))
