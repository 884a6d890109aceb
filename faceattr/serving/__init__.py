"""Serving: the pyfunc model `mlflow models serve` loads (model.py: photos in, values out) and batch
scoring of photo folders with it (batch.py).

FaceattrModel is importable from here because models logged before serving/ became a package
pickled it as `faceattr.serving.FaceattrModel`; they keep loading.
"""

import mlflow.pyfunc

from faceattr.serving.model import FaceattrModel, bad_request, encode_image, signature

__all__ = ["FaceattrModel", "bad_request", "encode_image", "load", "signature"]


def load(model_uri: str) -> FaceattrModel:
    """The FaceattrModel behind a logged or registered model URI, with its Keras models loaded."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
