"""Splits: stable, the held-out share is honest, and one person's photos never straddle splits."""

import hashlib

import numpy as np
import pandas as pd

from faceattr.data.splits import grouped_split_names, split_name, split_names


def test_content_split_is_stable_and_has_the_seed_shares():
    digests = [hashlib.sha1(str(i).encode()).hexdigest() for i in range(5000)]
    names = [split_name(d) for d in digests]
    assert names == [split_name(d) for d in digests]
    shares = pd.Series(names).value_counts(normalize=True)
    assert abs(shares["test"] - 0.10) < 0.015 and abs(shares["val"] - 0.09) < 0.015


def test_person_split_keeps_each_person_on_one_side_with_the_right_shares():
    persons = [f"p{i // 10:04d}" for i in range(2000)]
    frame = pd.DataFrame({"person": persons})
    names = split_names("auto", frame, None, [hashlib.sha1(p.encode()).hexdigest() for p in persons])
    by_person = pd.DataFrame({"person": persons, "split": names}).groupby("person")["split"].nunique()
    assert by_person.max() == 1
    counts = pd.Series(names).value_counts()
    assert counts["test"] == 200 and counts["val"] == 180 and counts["train"] == 1620


def test_group_split_does_not_depend_on_row_order():
    keys = [f"g{i % 37}" for i in range(500)]
    order = np.random.default_rng(0).permutation(500)
    names = grouped_split_names(keys)
    shuffled = grouped_split_names([keys[i] for i in order])
    assert [shuffled[list(order).index(i)] for i in range(500)] == names


def test_auto_falls_back_to_content_without_a_person_column():
    digests = [hashlib.sha1(str(i).encode()).hexdigest() for i in range(50)]
    assert split_names("auto", pd.DataFrame(index=range(50)), None, digests) == [split_name(d) for d in digests]
