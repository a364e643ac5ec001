"""What a damaged store costs and what catches it: reads with and without the per-shard CRC check, and
what each codec alone does with one flipped byte in a shard.

    python benchmarks/bench_store_damage.py --store STORE_756 [--images 128]

Copies the first --images images of a real store (e.g. the 300-image 756-px store of docs/numerics.md "NCut
eigensolver") into blosc-zstd and zstd stores of 64-image shards in /tmp, times reading every image
(best of 3, interleaved; the checked reader also reads each shard file once for its CRC), then flips one
byte in the middle of shard 0's features file and reads its images with the check switched off.
"""
import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import zarr

from pipeline.core.params import CompressorParams
from pipeline.features.store import FeatureStore, StoreSpec, StoreWriter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--images", type=int, default=128)
    a = ap.parse_args()
    src = zarr.open_group(a.store, mode="r")
    n = a.images
    feats, cls, sizes = src["features"][:n], src["cls"][:n], src["sizes"][:n]
    res = {}
    for name, comp in [("blosc-zstd", CompressorParams(name="blosc", cname="zstd", clevel=3)),
                       ("zstd", CompressorParams(name="zstd", clevel=1))]:
        path = Path(f"/tmp/crc_{name}.zarr"); shutil.rmtree(path, ignore_errors=True)
        g, d = tuple(src.attrs["grid"]), int(src.attrs["dim"])
        s = StoreSpec(tuple(f"s{i}" for i in range(n)), g, d, "copy", int(src.attrs["resolution"]), 14, "float32", 64, comp)
        w = StoreWriter(path, s)
        for k in range(-(-n // 64)):
            w.write_shard(k, feats[k * 64:(k + 1) * 64], cls[k * 64:(k + 1) * 64], sizes[k * 64:(k + 1) * 64])
        w.finalize()
        # read cost with and without the checks, interleaved
        times = {"checked": [], "unchecked": []}
        for rep in range(3):
            for mode in times:
                st = FeatureStore(path)
                if mode == "unchecked":
                    st._check = lambda k, a: None
                t = time.perf_counter()
                for i in range(n): st.features(i)
                times[mode].append(time.perf_counter() - t)
        # a flipped byte in the middle of shard 0's features, read by the codec alone
        f = path / "features/c/0/0/0"
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0x10
        f.write_bytes(bytes(data))
        st = FeatureStore(path)
        st._check = lambda k, a: None
        errors = silent = 0
        err = None
        for i in range(64):
            try:
                x = st.features(i)
                silent += int(not np.array_equal(x.reshape(-1, d), feats[i]))
            except Exception as e:  # whatever the codec raises
                errors += 1
                err = type(e).__name__ + ": " + str(e)[:80]
        res[name] = dict(checked_ms_per_image=min(times["checked"]) / n * 1000,
                         unchecked_ms_per_image=min(times["unchecked"]) / n * 1000,
                         flipped_byte_codec_errors=errors, flipped_byte_silent_wrong_images=silent, error=err)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
