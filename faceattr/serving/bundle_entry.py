"""A bundle's entry script (MLflow's models from code, as serving/entry.py is a single model's):
`tracking/packaging.log_bundle` logs this file as `python_model`; faceattr travels as `code_paths`."""

from mlflow.models import set_model

from faceattr.serving.bundle import BundleModel

set_model(BundleModel())
