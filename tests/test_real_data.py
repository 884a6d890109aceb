"""Real-data support: near-duplicate (phash) split, train.augment, prepare outputs as `--data`, evaluate smoke."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from faceattr import config as config_module
from faceattr import tasks
from faceattr.data.loading import Split
from faceattr.data.splits import phash_groups, phash_split_names
from faceattr.data.tfdata import to_tf_dataset
from faceattr.errors import ConfigError
from helpers import shared_data


def _scenes(n_scenes=6, frames=4, seed=0):
    """n_scenes distinct random images, each repeated `frames` times with small noise (video frames)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_scenes):
        base = rng.integers(0, 256, (8, 8, 3)).repeat(4, 0).repeat(4, 1).astype(float)
        out += [np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8) for _ in range(frames)]
    return np.stack(out)


def test_phash_groups_near_duplicates_and_keeps_them_on_one_side():
    images = _scenes()
    groups = phash_groups(images)
    assert len(set(groups)) == 6 and all(len(set(groups[i:i + 4])) == 1 for i in range(0, 24, 4))
    digests = [f"{i:040x}" for i in np.random.default_rng(1).integers(0, 2**62, 24)]
    names = phash_split_names(images, digests)
    assert all(len(set(names[i:i + 4])) == 1 for i in range(0, 24, 4))
    order = np.random.default_rng(2).permutation(24)    # stable: the same files in another order
    again = phash_split_names(images[order], [digests[i] for i in order])
    assert [again[list(order).index(i)] for i in range(24)] == names


def test_augment_switch_defaults_off_and_changes_only_training_batches():
    cfg = config_module.load("eyes")
    assert cfg["train"]["augment"] is False and cfg["data"]["split"] == "auto"
    with pytest.raises(ConfigError, match="data.split"):
        config_module.load("eyes", {"data.split": "random"})
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 60, 3), dtype=np.uint8)
    split = Split({"image": images}, np.full((8, 2), 0.5, np.float32), np.ones(8, np.float32), pd.DataFrame(index=range(8)))
    plain = next(iter(to_tf_dataset(split, 8, True)))[0]["image"].numpy()
    assert np.array_equal(plain, images.astype(np.float32))
    augmented = next(iter(to_tf_dataset(split, 8, True, shuffle_seed=0, augment=True)))[0]["image"].numpy()
    assert augmented.shape == plain.shape and augmented.min() >= 0 and augmented.max() <= 255
    assert not np.array_equal(np.sort(augmented.reshape(-1)), np.sort(plain.reshape(-1)))


def test_prepare_output_folder_is_a_data_source_per_region(tmp_path):
    from faceattr.data.loading import open_data
    from faceattr.data.prepare import prepare

    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(tmp_path / "in" / f"{i}.png")
    pd.DataFrame({"path": [f"{i}.png" for i in range(12)], "eyes": [i % 2 for i in range(12)]}
                 ).to_csv(tmp_path / "in" / "labels.csv", index=False)
    prepare(tmp_path / "in", tmp_path / "ds", image_region="eyes", progress=False, cache_dir=tmp_path / "c")
    cfg = config_module.load("eyes", {"data": str(tmp_path / "ds"), "data.split": "phash"})
    data = open_data(cfg, tasks.of(cfg))
    assert data.images.shape == (12, 32, 60, 3) and set(data.frame["image_region"]) == {"eyes"}


@pytest.mark.slow
def test_evaluate_runs_on_a_small_real_subset(tmp_path, mlflow_store, monkeypatch):
    import mlflow

    from faceattr import real_eval
    from faceattr.tasks import TASKS
    from faceattr.real_eval import evaluate_set, format_row

    seen = {}
    summarise = real_eval.summarise

    def spy(model, config, prepared, served):
        seen.update(model=model, prepared=prepared)
        return summarise(model, config, prepared, served)

    monkeypatch.setattr(real_eval, "summarise", spy)
    root = shared_data("eye-state")
    table = pd.read_csv(root / "labels.csv")
    small = pd.concat([table[table["eyes"] == v].head(30) for v in (0.0, 1.0)])
    (tmp_path / "eye-state").mkdir()
    small.to_csv(tmp_path / "eye-state" / "labels.csv", index=False)
    (tmp_path / "eye-state" / "images").symlink_to(root / "images")
    result = evaluate_set("eye-state", "phash", epochs=1, data_root=tmp_path)
    assert result["n_train"] + result["n_val"] + result["n_test"] == 60
    # the figures are the trained model's on the held-out test split, against its 0/1 labels
    test = seen["prepared"].splits["test"]
    assert len(test) == result["n_test"] > 0
    p = TASKS["regression"].scores(seen["model"].predict({"image": test.images.astype(np.float32), "gender": test.gender},
                                            verbose=0))
    assert result["accuracy"] == pytest.approx(np.mean((p >= 0.5) == (test.labels >= 0.5)))
    assert result["mse"] == pytest.approx(np.mean((p - test.labels) ** 2), rel=1e-5)
    assert result["baseline_ratio"] == pytest.approx(result["baseline_mse"] / result["mse"])
    (run,) = mlflow.search_runs(experiment_names=["evaluate-real"], output_format="list")
    assert run.data.metrics["real_accuracy"] == pytest.approx(result["accuracy"])
    assert f"accuracy={result['accuracy']:.4f}" in format_row(result)
