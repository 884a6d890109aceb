"""Batch scoring: `faceattr predict PHOTOS_DIR_OR_MANIFEST --model models:/eyes/Production --out preds.csv`.

Loads the model once and scores photos in batches through `FaceattrModel.read` and `answer_photos`, as
the server does (no JSON, no base64). A file that cannot be scored gets its reason in the CSV's `error` column; the rest are scored.
A manifest is a CSV with a `path` column (relative to the CSV's folder) and optionally `kind`,
`gender` (male/female) or `p_female` per row.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from faceattr.data.manifest import IMAGE_SUFFIXES
from faceattr.errors import DataError, FaceattrError


def list_inputs(source: str | Path, kind: str = "crop") -> pd.DataFrame:
    """Rows of (path, kind[, gender, p_female]) from a folder of images or a manifest CSV."""
    source = Path(source).expanduser()
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DataError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return pd.DataFrame({"path": [str(p) for p in paths], "kind": kind})
    if source.suffix.lower() == ".csv" and source.is_file():
        frame = pd.read_csv(source, dtype={"path": str, "kind": str, "gender": str})
        if "path" not in frame:
            raise DataError(f"{source}: a manifest needs a `path` column; got {list(frame.columns)}")
        frame["path"] = [str(p) if Path(str(p)).is_absolute() else str(source.parent / str(p))
                         for p in frame["path"]]
        frame["kind"] = frame["kind"].fillna(kind) if "kind" in frame else kind
        return frame
    raise DataError(f"{source}: not a folder of images or a manifest .csv")


def score(model, rows: pd.DataFrame, batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """`rows` plus the model's output columns and `error` (empty where the photo was scored)."""
    from tqdm import tqdm

    out = rows.copy()
    out["error"] = ""
    output_columns: list[str] = []
    records = rows.to_dict("records")
    with tqdm(total=len(records), unit="photo", disable=not progress, desc="scoring") as bar:
        for start in range(0, len(records), batch_size):
            chunk = records[start:start + batch_size]
            readings, good = [], []
            for offset, row in enumerate(chunk):
                try:
                    readings.append(model.read(row["path"], row.get("kind")))
                    good.append(start + offset)
                except DataError as exc:
                    out.iat[start + offset, out.columns.get_loc("error")] = str(exc)
            if good:
                found = model.answer_photos([r.inputs for r in readings],
                                            model.gender(rows.iloc[good], [r.face for r in readings]),
                                            [r.faces for r in readings])
                for column in found:
                    if column not in out:
                        out[column] = pd.Series([None] * len(out), dtype=object)
                        output_columns.append(column)
                    out.loc[out.index[good], column] = found[column].to_numpy()
            bar.update(len(chunk))
    return out[[c for c in out.columns if c not in ("error",)] + ["error"]]


def predict(source: str, model_uri: str, out: str, kind: str = "crop", batch_size: int = 64,
            progress: bool = True) -> pd.DataFrame:
    from mlflow.exceptions import MlflowException

    from faceattr.serving import load

    rows = list_inputs(source, kind)
    try:
        model = load(model_uri)
    except MlflowException as exc:
        raise FaceattrError(f"cannot load {model_uri}: {exc.message}") from None
    result = score(model, rows, batch_size, progress)
    result.to_csv(out, index=False)
    return result
