"""Folder layouts of the benchmark datasets, by name (docs/data.md "Datasets").

For each dataset the official release layout comes first, then the re-distributions the community
uses most ("Image/Mask", SINet-V2's "Imgs/GT", "images/masks"); the first layout whose two folders
exist wins.
"""

_COMMON = [("Image", "Mask"), ("Imgs", "GT"), ("images", "masks")]
PRESETS: dict[str, list[tuple[str, str]]] = {
    "ECSSD": [("images", "ground_truth_mask")] + _COMMON,
    "DUTS-TR": [("DUTS-TR-Image", "DUTS-TR-Mask")] + _COMMON,
    "DUTS-TE": [("DUTS-TE-Image", "DUTS-TE-Mask")] + _COMMON,
    "HKU-IS": [("imgs", "gt")] + _COMMON,
    "PASCAL-S": [("datasets/imgs/pascal", "datasets/masks/pascal")] + _COMMON,
    "DUT-OMRON": [("DUT-OMRON-image", "pixelwiseGT-new-PNG")] + _COMMON,
    "SOD": [("images", "GT")] + _COMMON,
    "CHAMELEON": [("Imgs", "GT")] + _COMMON,
    "CAMO": [("Images/Test", "GT")] + _COMMON,
    "COD10K": [("Test/Image", "Test/GT_Object")] + _COMMON,
    "NC4K": [("Imgs", "GT")] + _COMMON,
}
COD_PRESETS = ("CHAMELEON", "CAMO", "COD10K", "NC4K")  # the camouflaged-object benchmarks (paper Table 2)
