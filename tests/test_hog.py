"""Backbone dlib-resnet-hog (the glasses model): the HOG of the region cut at its finer size, one row of
descriptor and HOG that training and serving compute alike, and the head's scale and L2 penalty."""

import io
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from faceattr import config, experiment, models
from faceattr.data import faces
from faceattr.data.loading import Data
from faceattr.data.regions import REGION_SIZES, load_rgb
from faceattr.features import face_descriptor, hog
from faceattr.models import inputs
from helpers import require_face_features, shared_data


def test_hog_reads_the_region_at_its_finer_size():
    """The eye band is cut at 48x90, not the CNN's 32x60: 5 x 10 blocks of 2x2 cells of 8 px, 9 bins.
    Broken by cutting at the region's crop size (`size=` dropped in hog.of_cut): 3 x 6 blocks."""
    assert REGION_SIZES["eyes"] == (32, 60) and hog.size("eyes") == (48, 90)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8), "RGB")
    row = hog.of_cut(photo, "eyes", (40, 30, 160, 90))
    assert row.shape == (hog.length("eyes"),) == (5 * 10 * 2 * 2 * 9,)
    assert inputs.DESCRIPTOR_HOG.shape("eyes") == (face_descriptor.DIMENSIONS + hog.length("eyes"),)


def test_a_whole_photo_is_read_alike_in_training_and_when_served(tmp_path):
    """Two LFW portraits: the rows training computes (of_data, from the manifest's boxes) equal the rows the
    served model computes from the photo and the boxes it finds (of_photo). Broken by the HOG of the whole
    photo instead of its eye band in either path, or the descriptor and HOG in another order."""
    require_face_features()
    root = shared_data("lfw-attributes")
    paths = [str(root / p) for p in pd.read_csv(root / "labels.csv")["path"].head(2)]
    found = [faces.find_regions(load_rgb(p)) for p in paths]
    frame = pd.DataFrame({"path": paths, "image_region": "photo", "content_sha1": ["a", "b"],
                          **{column: [boxes[column] for boxes in found] for column in ("face_box", "eyes_box")}})
    data = Data("lfw", str(root), frame, np.zeros((2, *REGION_SIZES["eyes"], 3), np.uint8))
    data, computed, left_out = inputs.DESCRIPTOR_HOG.of_data(data, "eyes", progress=False)
    assert not left_out and computed["descriptor_hog"].shape == (2, *inputs.DESCRIPTOR_HOG.shape("eyes"))
    for i, path in enumerate(paths):
        boxes = {column: frame.loc[i, column] for column in ("face_box", "eyes_box")}
        served = inputs.DESCRIPTOR_HOG.of_photo(load_rgb(path), "eyes", boxes)
        np.testing.assert_allclose(served[0], computed["descriptor_hog"][i], atol=1e-5)
        # the descriptor first, as DESCRIPTOR computes it; then the eye band's HOG
        np.testing.assert_allclose(served[0, :face_descriptor.DIMENSIONS],
                                   inputs.DESCRIPTOR.of_photo(load_rgb(path), "eyes", boxes)[0], atol=1e-5)


def test_the_logged_model_s_input_example_is_a_whole_photo_sent_whole():
    """The model finds the eye band by the face's landmarks, so its example request is the whole photo with
    kind=photo (a crop would be read as a ready crop: its HOG of the wrong region). Broken by the kind
    `crop` written into experiment.input_example again."""
    root = shared_data("lfw-attributes")
    path = str(root / pd.read_csv(root / "labels.csv")["path"].iloc[0])
    split = SimpleNamespace(frame=pd.DataFrame({"path": [path], "image_region": ["photo"]}))
    row = experiment.input_example(config.load("glasses"), split).iloc[0]
    assert row["kind"] == "photo" and row["gender"] == "female"
    assert Image.open(io.BytesIO(row["image"])).size == load_rgb(path).size


@pytest.mark.parametrize("l2, penalised", [(0.1, True), (0.0, False)])
def test_the_head_scales_each_part_to_unit_size_and_penalises_its_weights(l2, penalised):
    """A row of typical components (descriptor ~1/sqrt(128), HOG ~1/6) leaves the scale layer as ones, and
    `model.l2` adds the L2 penalty to the loss the fit minimises. Broken by one variance for both parts, or
    the penalty left off the output layer."""
    cfg = config.load("glasses", {"model.l2": l2})
    model = models.build(cfg)
    row = np.concatenate([np.full(face_descriptor.DIMENSIONS, face_descriptor.DIMENSIONS ** -0.5),
                          np.full(hog.length("eyes"), 1 / hog.UNIT_SCALE)])[None].astype(np.float32)
    scaled = np.asarray(model.get_layer("unit_scale")(row))
    np.testing.assert_allclose(scaled, 1.0, rtol=1e-4)
    assert bool(model.losses) is penalised
