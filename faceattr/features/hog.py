"""Histograms of oriented gradients (HOG; Dalal and Triggs, 2005, computed by scikit-image) of a region's
cut: where a face's edges run, which is what glasses are (rims, the bridge over the nose).

Why HOG beside dlib's descriptor: the descriptor is made to be the same for one person with or without
glasses, and a CNN trained from scratch on ~2,200 LFW eye bands misses thin wire rims. On all 3,107 LFW
portraits (5-fold, logistic regression; benchmarks/glasses_inputs.py): descriptor 94.5%, HOG of the 32x60
eye band 93.6-94.1%, HOG of the band cut at 48x90 with 8-px cells 96.0%, the descriptor and that HOG 97.1%.

The cut: the region's box (the same landmark box the crop models read) at SCALE times the region's crop
size, grey, so a 1-2 px rim survives the resize. 8x8-px cells, 2x2-cell blocks, 9 orientations, L2-Hys:
Dalal and Triggs' settings (scikit-image's defaults but the block, which is 3x3 there).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from faceattr.data.regions import REGION_SIZES, crop_region

SCALE = 1.5                 # of the region's crop size: eyes 32x60 -> 48x90
CELL, BLOCK, ORIENTATIONS = 8, 2, 9
# Each block is normalised to unit length (L2-Hys): its components are ~1/sqrt(block length). Scaled by
# this the features are ~unit sized (models/hog_head.py), as face_head scales the descriptor's.
UNIT_SCALE = math.sqrt(BLOCK * BLOCK * ORIENTATIONS)


def size(region: str) -> tuple[int, int]:
    """(height, width) of the cut HOG reads."""
    height, width = REGION_SIZES[region]
    return round(height * SCALE), round(width * SCALE)


def length(region: str) -> int:
    """How many numbers the HOG of a region's cut has."""
    cells = [side // CELL for side in size(region)]
    return math.prod(count - BLOCK + 1 for count in cells) * BLOCK * BLOCK * ORIENTATIONS


def of_cut(image: Image.Image, region: str, box=None, *, cut: tuple[int, int] | None = None,
           cell: int = CELL) -> np.ndarray:
    """The HOG (length(region),) of `region` cut from `image` at `box` (None: the image is the region).
    `cut` (H, W) and `cell` replace the shipped size and cell: the benchmarks compare others with them."""
    from skimage.feature import hog

    grey = crop_region(image, region, box, size=cut or size(region)).mean(axis=2)
    features = hog(grey, orientations=ORIENTATIONS, pixels_per_cell=(cell, cell), cells_per_block=(BLOCK, BLOCK),
                   block_norm="L2-Hys", feature_vector=True)
    return features.astype(np.float32)
