"""Keras models (pure Keras 3, so they run under any backend): `build(config)` picks the right one."""

from faceattr.models import transfer  # noqa: F401  registers CaffePreprocess, so a saved VGG16 identity model loads
from faceattr.models.cnn import build, to_unit_range

__all__ = ["build", "to_unit_range"]
