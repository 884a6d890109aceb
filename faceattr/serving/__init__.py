"""Serving: the pyfunc model `mlflow models serve` loads (model.py: photos in, values out) and batch
scoring of photo folders with it (batch.py).

FaceattrModel is importable from here because models logged before serving/ became a package
pickled it as `faceattr.serving.FaceattrModel`; they keep loading.
"""

from faceattr.serving.model import FaceattrModel, bad_request, encode_image, signature

__all__ = ["FaceattrModel", "bad_request", "encode_image", "signature"]
