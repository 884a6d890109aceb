"""The k-fold judge (faceattr/kfold.py): each photo held out exactly once, a face (its person, its video,
its copies) never in two folds, and the share's interval."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from faceattr import kfold
from faceattr.errors import ConfigError


def test_each_photo_is_held_out_once_and_a_group_never_straddles_two_folds():
    """Seen to fail with folds dealing rows instead of groups (fold_of keyed by row)."""
    keys = ["anna"] * 7 + ["bob"] * 3 + ["cem"] * 3 + [f"solo{i}" for i in range(17)] + ["bob", "anna"]
    found = kfold.folds(keys, 5)
    assert found.shape == (len(keys),) and set(found) == set(range(5))        # each row in one fold of five
    for key in set(keys):
        assert len(set(found[[i for i, k in enumerate(keys) if k == key]])) == 1, key
    sizes = np.bincount(found, minlength=5)
    assert sizes.max() - sizes.min() <= 8 - 1 and sizes.sum() == len(keys)  # as even as anna's 8 allow
    assert (kfold.folds(list(reversed(keys)), 5)[::-1] == found).all()      # the same deal in any order


def test_copies_of_one_face_are_one_group(tmp_path):
    """Without a person or video column, photos are grouped by content: a copy under another name lands
    in its original's fold. Seen to fail with group_keys keyed by path."""
    paths = []
    for i in range(12):
        pixels = np.random.default_rng(i % 6).integers(0, 255, (20, 20, 3), dtype=np.uint8)   # 6 faces, twice
        Image.fromarray(pixels).save(tmp_path / f"p{i}.png")
        paths.append(str(tmp_path / f"p{i}.png"))
    found = kfold.folds(kfold.group_keys(pd.DataFrame({"path": paths}), None), 3)
    assert all(found[i] == found[i + 6] for i in range(6))
    by_video = kfold.group_keys(pd.DataFrame({"path": paths, "video": ["v1"] * 6 + ["v2"] * 6}), "video")
    assert by_video == ["v1"] * 6 + ["v2"] * 6


def test_too_few_groups_for_the_folds_is_refused():
    with pytest.raises(ConfigError, match="2 groups cannot fill 3 folds"):
        kfold.folds(["a", "b", "a"], 3)


def test_a_share_carries_its_wilson_interval():
    share = kfold.Share(528, 571)
    low, high = share.interval()
    assert share.value == pytest.approx(0.9247, abs=1e-4) and low == pytest.approx(0.9015, abs=2e-3)
    assert high == pytest.approx(0.9429, abs=2e-3) and str(share).endswith("n=571)")
