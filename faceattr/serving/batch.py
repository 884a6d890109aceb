"""Batch scoring on one machine: `faceattr predict PHOTOS --model models:/eyes/Production --out preds.csv`.

PHOTOS is a folder of images, a glob (`'photos/**/*.jpg'`) or a manifest (CSV or Parquet) with a `path`
column (relative to the manifest's folder) and optionally `kind`, `gender` (male/female) or `p_female`
per row; its other columns (labels) are carried through to the output.

The photos are cut into chunks of `batch_size`; each worker process (one per core) loads the model once
and answers whole chunks through `FaceattrModel.read_all` and `answer_reads`, as the served model does: the
files' bytes decoded, the faces detected (MTCNN, one batch per chunk), the regions cut, the gender inputs,
one batched predict.
Worker processes rather than threads: MTCNN (TensorFlow) and dlib hold the interpreter, and TensorFlow is
given one thread per process so the processes, not TF's thread pool, use the cores. Spark's engine
(serving/spark.py) runs the same model the same way, a chunk being an Arrow batch.

The output keeps every input column and adds the answer's columns named `pred_<column>` (a manifest's
label column `mouth` and the answer `pred_mouth` side by side) and `error`: one row per input, the
reason where a file could not be answered (unreadable, truncated, oversized, no face, ...).
"""

from __future__ import annotations

import glob
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

from faceattr.data import faces
from faceattr.data.manifest import IMAGE_SUFFIXES
from faceattr.errors import DataError, FaceattrError
from faceattr.serving import model as served
from faceattr.serving.model import ERROR, INPUT_COLUMNS

ANSWER_PREFIX = "pred_"
STAGES = ("decode", "detect", "cut", "gender input", "predict")   # where a photo's time goes (--profile)


def list_inputs(source: str | Path, kind: str = "crop") -> pd.DataFrame:
    """Rows of (path, kind[, gender, p_female, labels ...]) from a folder, a glob or a manifest."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        paths = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return pd.DataFrame({"path": [str(p) for p in paths], "kind": kind})
    if path.suffix.lower() in (".csv", ".parquet") and path.is_file():
        return read_manifest(path, kind)
    if glob.has_magic(text):
        paths = sorted(p for p in glob.glob(os.path.expanduser(text), recursive=True) if os.path.isfile(p))
        if not paths:
            raise DataError(f"{text}: no files match this pattern")
        return pd.DataFrame({"path": paths, "kind": kind})
    raise DataError(f"{text}: not a folder of images, a glob or a manifest (.csv, .parquet)")


def read_manifest(path: Path, kind: str = "crop") -> pd.DataFrame:
    """A manifest's rows with absolute paths; DataError naming the column when one is missing or would
    collide with the output's own columns."""
    if path.suffix.lower() == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, dtype={"path": str, "kind": str, "gender": str})
    if "path" not in frame:
        raise DataError(f"{path}: a manifest needs a `path` column (the photo's file); got {list(frame.columns)}")
    taken = [c for c in frame.columns if c == ERROR or str(c).startswith(ANSWER_PREFIX)]
    if taken:
        raise DataError(f"{path}: column {', '.join(map(repr, taken))} would collide with the answer's columns "
                        f"(`{ERROR}`, `{ANSWER_PREFIX}*`): rename it")
    frame["path"] = [str(p) if Path(str(p)).is_absolute() else str(path.parent / str(p)) for p in frame["path"]]
    frame["kind"] = frame["kind"].fillna(kind) if "kind" in frame else kind
    return frame


def answer_columns(answer: pd.DataFrame) -> pd.DataFrame:
    """The model's answer renamed for the output: `pred_<column>`, and `error` as it is."""
    return answer.rename(columns={c: c if c == ERROR else ANSWER_PREFIX + c for c in answer.columns})


# --- one chunk of photos: runs in a worker process (or in this one for workers=1) --------------------

_model = None   # this worker's model (loaded once by the pool's initializer)


def _start_worker(model_dir: str) -> None:
    """One TensorFlow thread per worker process (set before TF runs anything), then the model."""
    global _model
    from faceattr.serving import load

    faces.one_tf_thread()

    _model = load(model_dir)


def answer_chunk(model, rows: list[dict]) -> tuple[pd.DataFrame, dict]:
    """The model's answer (with `error`) for rows of (path, kind, ...), and the seconds spent per stage."""
    profile: dict[str, float] = {}
    raws = []
    for row in rows:
        try:
            with open(row["path"], "rb") as fh:
                raws.append(served.photo_bytes(fh.read()))
        except OSError as exc:
            raws.append(DataError(f"cannot read file ({exc.strerror or exc})"))
        except DataError as exc:
            raws.append(exc)
    return model.answer_batch(raws, rows, profile), profile


def _answer_in_worker(rows: list[dict]) -> tuple[pd.DataFrame, dict]:
    return answer_chunk(_model, rows)


# --- the whole job --------------------------------------------------------------------------------


def score(model, rows: pd.DataFrame, batch_size: int = 64, progress: bool = True, workers: int = 1
          ) -> tuple[pd.DataFrame, dict]:
    """`rows` plus the answer's columns (`pred_*`, `error`), and the seconds spent per stage (summed over
    the photos; `wall`: the whole job). model: a loaded FaceattrModel, or the model's local folder
    (`local_model`); workers: processes, each loading the model from that folder (1: this process)."""
    from tqdm import tqdm

    records = [{k: v for k, v in r.items() if k in INPUT_COLUMNS or k == "path"} for r in rows.to_dict("records")]
    size = batch_size if workers <= 1 else max(1, min(batch_size, -(-len(records) // (4 * workers))))
    # several workers: a few chunks each, so all are busy to the end; one: whole batches (MTCNN's and
    # the model's cost per photo falls with the batch)
    chunks = [records[i:i + size] for i in range(0, len(records), size)]
    workers = max(1, min(workers, len(chunks)))
    started = time.perf_counter()
    answers, profile = [], dict.fromkeys(STAGES, 0.0)
    pool = None
    if workers > 1:
        if not isinstance(model, str):
            raise FaceattrError("scoring with several workers needs the model's folder (local_model), not a "
                                "loaded model: each worker loads its own")
        # spawn, not fork: this process may already run TensorFlow's threads, which a fork would not copy
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start_worker,
                                   initargs=(model,))
        done = pool.map(_answer_in_worker, chunks)
    else:
        if isinstance(model, str):
            from faceattr.serving import load

            model = load(model)
        done = (answer_chunk(model, chunk) for chunk in chunks)
    try:
        with tqdm(total=len(records), unit="photo", disable=not progress, desc="scoring") as bar:
            for answer, seconds in done:
                answers.append(answer)
                for stage, value in seconds.items():
                    profile[stage] += value
                bar.update(len(answer))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    profile["wall"] = time.perf_counter() - started
    answer = answer_columns(pd.concat(answers, ignore_index=True))
    return pd.concat([rows.reset_index(drop=True), answer], axis=1), profile


def local_model(model_uri: str) -> str:
    """The model's folder on this machine (downloaded once; every worker loads it from here)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.artifacts.download_artifacts(model_uri)
    except MlflowException as exc:
        raise FaceattrError(f"cannot load {model_uri}: {exc.message}") from None
    except OSError as exc:
        raise FaceattrError(f"cannot load {model_uri}: {exc}") from None


def write(result: pd.DataFrame, out: str) -> None:
    """CSV, or Parquet for a `.parquet` name."""
    if str(out).lower().endswith(".parquet"):
        result.to_parquet(out, index=False)
    else:
        result.to_csv(out, index=False)


def profile_lines(profile: dict, photos: int) -> list[str]:
    """Where the time went: milliseconds per photo per stage (summed over the workers) and the wall time."""
    lines = [f"  {stage:<13} {1000 * profile.get(stage, 0.0) / max(photos, 1):8.1f} ms/photo" for stage in STAGES]
    wall = profile.get("wall", 0.0)
    return lines + [f"  {'wall':<13} {wall:8.1f} s for {photos} photos ({photos / wall if wall else 0:.1f} photos/s)"]


def predict(source: str, model_uri: str, out: str, kind: str = "crop", batch_size: int = 64,
            workers: int | None = None, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Score PHOTOS into `out` with `workers` processes (default: one per core)."""
    rows = list_inputs(source, kind)
    result, profile = score(local_model(model_uri), rows, batch_size, progress, workers or os.cpu_count() or 1)
    write(result, out)
    return result, profile
