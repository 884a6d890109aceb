"""The MLflow model registry: find a registered model's champion (promotion policies build on this)."""

from __future__ import annotations

import mlflow
from mlflow.exceptions import MlflowException

CHAMPION = "champion"


def champion(name: str):
    """The ModelVersion holding alias `champion` of registered model `name`, or None if there is none."""
    try:
        return mlflow.MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def load_faceattr_model(model_uri: str):
    """The FaceattrModel (serving.py) behind a logged or registered model URI, with its Keras models loaded."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
