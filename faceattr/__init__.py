"""faceattr: MLflow-tracked experiments for small Keras models that read attributes off face photos."""

__version__ = "0.1.0"
