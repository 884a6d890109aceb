"""Where faceattr keeps what it can recompute (synthetic photos, detections, landmarks, face descriptors,
outboxes), and the two rules every file kept there follows: named by its content, written whole."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np


def cache_root() -> Path:
    """$FACEATTR_CACHE, else ~/.cache/faceattr."""
    return Path(os.environ.get("FACEATTR_CACHE") or Path.home() / ".cache" / "faceattr").expanduser()


def by_content(folder: Path, sha1: str, name: str = "") -> Path:
    """The cache entry of content `sha1` in `folder`: `<sha1[:2]>/<sha1><name>` (256 sub-folders, so no
    folder holds more than a few thousand files)."""
    return Path(folder) / sha1[:2] / f"{sha1}{name}"


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` under a unique temporary name beside `path`, then rename it into place: a reader (another
    worker, a later run) sees the whole file or none, and a crash leaves no half file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as the bytes of a .npy file (for write_atomic)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
