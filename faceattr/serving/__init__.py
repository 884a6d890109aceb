"""Serving: the pyfunc model `mlflow models serve` loads (model.py: photos in, values out; logged from
code by entry.py) and batch scoring of photo folders with it (batch.py).

FaceattrModel is importable from here because models logged before serving/ became a package
pickled it as `faceattr.serving.FaceattrModel`; they keep loading.
"""

import mlflow.pyfunc

from faceattr.serving.model import ERROR, FaceattrModel, bad_request, encode_image, image_bytes, signature

__all__ = ["ERROR", "FaceattrModel", "bad_request", "encode_image", "image_bytes", "load", "signature"]


def load(model_uri: str) -> FaceattrModel:
    """The FaceattrModel behind a logged or registered model URI, with its Keras models loaded."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
