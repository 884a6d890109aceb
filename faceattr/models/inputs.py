"""What a model reads of a photo: an input kind, declared by its backbone (`READS`, default IMAGE).

A kind knows its shape, how to compute itself from a data set, a split, a ready crop, a whole photo
or a face, the pinned requirements a served model reading it needs beyond faceattr's own, and whether
`train.augment` applies. Training, promotion, the served model and the gender input ask the kind;
none of them branches on its name. A backbone reading something new is one more kind here.

- IMAGE: the region's crop, (H, W, 3) in 0..255, resized as in training (data/regions.py).
- DESCRIPTOR: dlib's 128-number face descriptor of the photo at full resolution
  (features/face_descriptor.py); the face is searched whole in a crop, found by MTCNN in a photo.
- DESCRIPTOR_HOG: that descriptor, then the HOG of the region's cut (features/hog.py) in one row: what
  the glasses model reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceattr.data.regions import REGION_SIZES, crop_region, parse_box
from faceattr.errors import ConfigError, DataError
from faceattr.features import face_descriptor, hog


@dataclass(frozen=True)
class Image:
    name: str = "image"            # the Keras input's name
    what: str = "crops"            # what a caller hands over, in error messages
    augments: bool = True          # train.augment changes pixels: it applies to crops
    pins: tuple[str, ...] = ()     # nothing beyond faceattr's own requirements

    def shape(self, region: str) -> tuple[int, ...]:
        return (*REGION_SIZES[region], 3)

    def of_data(self, data, region: str, progress: bool = True):
        """(the data set, its inputs beyond the crops of `region` it holds ({kind name: rows}: none), the photos
        left out)."""
        return data, {}, []

    def of_split(self, split) -> np.ndarray:
        return split.inputs[self.name]

    def example(self, split) -> tuple[np.ndarray, str]:
        """One request a served model takes (its input example): the pixels and how they are sent (`kind`)."""
        return split.images[0], "crop"

    def needs_face(self, region: str) -> bool:
        """Whether a whole photo's face must be found to read it (the background needs none)."""
        return region != "photo"

    def cache_key(self, region: str) -> tuple:
        """What a face's input of this kind depends on besides the face: the region cut (a bundle computes
        each key once per face, serving/bundle.py)."""
        return (self.name, region)

    def of_crop(self, image, region: str) -> np.ndarray:
        """A ready crop of the model's region -> (1, H, W, 3)."""
        return crop_region(image, region)[None]

    def of_photo(self, image, region: str, boxes: dict, read=None) -> np.ndarray:
        """A whole photo with its detected boxes -> (cuts, H, W, 3): one crop per cut (each eye). `read(kind,
        region)`: another kind's input of the same face, already computed by the caller (a bundle), for a
        kind made of others (DescriptorHog); None: compute everything here."""
        from faceattr.data import faces

        return faces.cut(image, region, boxes)

    def of_face(self, image, face_box: str) -> np.ndarray | None:
        """The face of a whole photo, as a gender model reading this kind takes it."""
        return crop_region(image, "face", parse_box(face_box))

    def of_rows(self, frame) -> tuple[np.ndarray, np.ndarray]:
        """A data set's faces (whole photos with face boxes, or face crops) -> (inputs, which rows have one)."""
        from faceattr.data.loading import load_crops

        crops = load_crops(frame, "face")[0]
        return crops, np.ones(len(crops), bool)


# A model reading face descriptors computes them when serving: dlib and its packaged weights
# (face_recognition_models imports pkg_resources, which setuptools 81 removed).
DESCRIPTOR_PINS = ("dlib-bin==20.0.1.post1", "face_recognition_models==0.3.0", "setuptools<81")


@dataclass(frozen=True)
class Descriptor:
    name: str = "descriptor"
    what: str = "descriptors"
    augments: bool = False         # computed from the photo, not from augmented pixels
    pins: tuple[str, ...] = DESCRIPTOR_PINS

    def shape(self, region: str) -> tuple[int, ...]:
        return (face_descriptor.DIMENSIONS,)

    def of_data(self, data, region: str, progress: bool = True):
        """Only the photos with a usable face, their descriptors ({"descriptor": rows}), the photos left out."""
        data, descriptors, left_out = face_descriptor.describe_data(data, progress=progress)
        return data, {self.name: descriptors}, left_out

    def of_split(self, split) -> np.ndarray:
        return split.inputs[self.name]

    def example(self, split) -> tuple[np.ndarray, str]:
        return face_descriptor.example_face(split.frame), "crop"     # the descriptor is computed from it

    def needs_face(self, region: str) -> bool:
        return True

    def cache_key(self, region: str) -> tuple:
        return (self.name,)    # the face's descriptor, whatever region the model names

    def of_crop(self, image, region: str) -> np.ndarray:
        return face_descriptor.describe(np.asarray(image))[None]    # a crop is searched whole

    def of_photo(self, image, region: str, boxes: dict, read=None) -> np.ndarray:
        return face_descriptor.describe(np.asarray(image), parse_box(boxes["face_box"]))[None]

    def of_face(self, image, face_box: str) -> np.ndarray | None:
        try:
            return face_descriptor.describe(np.asarray(image), parse_box(face_box))
        except DataError:     # dlib sees no face where MTCNN did: the gender input falls back to unknown
            return None

    def of_rows(self, frame) -> tuple[np.ndarray, np.ndarray]:
        found, kept, _ = face_descriptor.describe_rows(frame, max_failure_share=None, progress=False)
        return found, kept


NOT_A_GENDER_INPUT = "no gender model reads descriptors and HOG (the gender task's backbones do not)"


@dataclass(frozen=True)
class DescriptorHog(Descriptor):
    """The face descriptor, then the HOG of the model's region cut from the same photo (one row each)."""
    name: str = "descriptor_hog"
    what: str = "descriptors and HOG"
    pins: tuple[str, ...] = (*DESCRIPTOR_PINS, "scikit-image==0.26.0")

    def shape(self, region: str) -> tuple[int, ...]:
        return (face_descriptor.DIMENSIONS + hog.length(region),)

    def of_data(self, data, region: str, progress: bool = True):
        """Only the photos with a usable face, their descriptor and HOG rows, the photos left out. The HOG is
        cut from the file at its own size (hog.size): a whole photo at its `<region>_box`, a crop whole."""
        from faceattr.data.regions import load_rgb

        data, found, left_out = face_descriptor.describe_data(data, progress=progress)
        column = f"{region}_box"
        boxes = data.frame[column] if column in data.frame else [None] * len(data.frame)   # crops have none
        hogs = np.zeros((len(found), hog.length(region)), np.float32)
        for i, (path, image_region, box) in enumerate(zip(data.frame["path"], data.frame["image_region"], boxes)):
            hogs[i] = hog.of_cut(load_rgb(path), region, parse_box(box) if image_region == "photo" else None)
        return data, {self.name: np.hstack([found, hogs])}, left_out

    def example(self, split) -> tuple[np.ndarray, str]:
        """The first photo as its file holds it: a whole photo is sent whole, where the HOG's region is found."""
        from faceattr.data.regions import load_rgb

        row = split.frame.iloc[0]
        return np.asarray(load_rgb(row["path"])), "photo" if row["image_region"] == "photo" else "crop"

    def cache_key(self, region: str) -> tuple:
        return (self.name, region)

    def of_crop(self, image, region: str) -> np.ndarray:
        """A ready crop of the region: the face is searched in it whole, its HOG is the crop's (as of_data)."""
        return np.hstack([face_descriptor.describe(np.asarray(image)), hog.of_cut(image, region)])[None]

    def of_photo(self, image, region: str, boxes: dict, read=None) -> np.ndarray:
        """The face's descriptor (the bundle's, when `read` has it: an age model beside this one needs the
        same), then the region's HOG."""
        descriptor = read(DESCRIPTOR, region) if read else DESCRIPTOR.of_photo(image, region, boxes)
        return np.hstack([descriptor[0], hog.of_cut(image, region, parse_box(boxes[f"{region}_box"]))])[None]

    def of_face(self, image, face_box: str):
        raise ConfigError(NOT_A_GENDER_INPUT)

    def of_rows(self, frame):
        raise ConfigError(NOT_A_GENDER_INPUT)


IMAGE, DESCRIPTOR, DESCRIPTOR_HOG = Image(), Descriptor(), DescriptorHog()
KINDS = {kind.name: kind for kind in (IMAGE, DESCRIPTOR, DESCRIPTOR_HOG)}


def named(name: str):
    """The kind a record names (faceattr/record.py)."""
    return KINDS[name]


def of_model(model) -> Image | Descriptor:
    """What a built or loaded Keras model reads: the kind whose name is one of its inputs."""
    names = {tensor.name for tensor in model.inputs}
    return next((kind for kind in KINDS.values() if kind.name in names), IMAGE)
