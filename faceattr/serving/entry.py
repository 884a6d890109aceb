"""The served model's entry script (MLflow's models from code): `tracking/packaging.py` logs this file as
`python_model`, MLflow copies it into the logged model (the MLmodel's `model_code_path`) and runs it on
load. faceattr itself travels with the model as `code_paths`, so this import works where faceattr is
not installed; nothing is pickled. The record and the Keras files are the model's artifacts."""

from mlflow.models import set_model

from faceattr.serving.model import FaceattrModel

set_model(FaceattrModel())
