"""Where faceattr keeps what it can recompute: synthetic photos, detections, face descriptors, outboxes."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$FACEATTR_CACHE, else ~/.cache/faceattr."""
    return Path(os.environ.get("FACEATTR_CACHE") or Path.home() / ".cache" / "faceattr").expanduser()
