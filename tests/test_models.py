"""The seed architectures, built from the YAMLs, have exactly the seeds' parameter counts."""

import numpy as np
import pytest

from faceattr import config, models, tasks

SEED_PARAMS = {"background": 2_101_857, "mouth": 1_446_497, "eyes": 985_073}


@pytest.mark.parametrize("name, params", SEED_PARAMS.items())
def test_seed_widths_give_the_seed_parameter_counts(name, params):
    model = models.build(config.load(name))
    assert model.count_params() == params
    dense = [layer.name for layer in model.layers if type(layer).__name__ == "Dense"]
    assert dense == ["dense_0", "dense_1", "dense_final"]


@pytest.mark.parametrize("name, flat", [("background", (11, 11, 64)), ("mouth", (9, 9, 64)), ("eyes", (3, 6, 128))])
def test_conv_stack_reduces_to_the_seed_shapes(name, flat):
    model = models.build(config.load(name))
    assert tuple(model.get_layer("conv_dropout").output.shape[1:]) == flat


def test_regression_reads_the_gender_probability():
    model = models.build(config.load("eyes", {"model.dropout": 0.0}))
    image = np.random.default_rng(0).uniform(0, 255, (1, 32, 60, 3)).astype("float32")
    male = model.predict({"image": image, "gender": np.array([[1.0, 0.0]], "float32")}, verbose=0)
    female = model.predict({"image": image, "gender": np.array([[0.0, 1.0]], "float32")}, verbose=0)
    assert male[0, 0] != female[0, 0]
    # the output layer is linear (a sigmoid collapsed under MSE); reported values are clipped to 0..1:
    # values outside are moved to the nearest bound, values inside are kept, one value per photo
    raw = np.array([[-0.3], [0.0], [0.42], [1.0], [1.7], [male[0, 0]]])
    assert tasks.TASKS["regression"].scores(raw).tolist() == [0.0, 0.0, 0.42, 1.0, 1.0, min(max(float(male[0, 0]), 0.0), 1.0)]


def test_gender_classifier_outputs_two_probabilities():
    model = models.build(config.load("gender"))
    out = model.predict({"image": np.zeros((3, 60, 60, 3), "float32")}, verbose=0)
    assert out.shape == (3, 2) and np.allclose(out.sum(1), 1, atol=1e-5)
