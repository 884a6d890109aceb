"""Data sets from files (a labels CSV or folder-per-class), validated completely before any compute.

The DataFrame contract the rest of faceattr consumes: one row per image with
- `path`: absolute path string;
- the experiment's target column (a number in its declared range: tasks.Target), `gender`
  ('male'/'female'/None), `person` (str), and any other columns as read (numbers where they all parse);
- `image_region`: 'photo' (a whole photo; crops come from box columns) or 'face'/'eyes'/'mouth' (a crop);
- optional `face_box`, `eyes_box`, `mouth_box`, `eye_left_box`, `eye_right_box`: "x0 y0 x1 y1" pixel strings;
- optional `cut_by`: `faceattr` where the crops were cut by faceattr's own crop code (`faceattr prepare`
  writes it), so a model trained on them is served whole photos through the same cut;
- `row` (CSV manifests only): the line number in the CSV file (header is line 1), for error messages.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from faceattr.data.regions import CUTS, REGION_SIZES, box_columns, load_rgb, parse_box
from faceattr.errors import DataError

GENDERS = ("male", "female")
TEXT_LABELS = ("gender", "person")   # checked whenever present: the gender input, who a photo shows
BOX_COLUMNS = tuple(column for r in REGION_SIZES if r != "photo" for column in box_columns(r))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MAX_LISTED = 1000  # bad rows listed in one error; beyond that the message stops being readable
LISTED_ROWS = 10   # rows named per target column with bad labels (the rest are counted)
_GENDER_ALIASES = {"male": "male", "m": "male", "female": "female", "f": "female"}


def read_manifest(csv_path, *, targets=None, image_region=None, gender_map=None) -> pd.DataFrame:
    """Read a labels CSV (`path` relative to the CSV's folder, plus label columns).

    `targets` maps each label column the experiment needs to its range (tasks.Task.label_ranges); a
    missing one is an error naming the file. Paths are resolved; `image_region` (from the experiment YAML) overrides the column (default: the CSV's
    `image_region` column if present, else 'photo'). Gender values male/female (any case) and M/F are
    normalised; `gender_map` maps other raw values first (e.g. {0: "male", 1: "female"}). Values that stay
    unknown are kept as they are for validate() to report. Does NOT open images (see validate).
    """
    csv_path = Path(csv_path)
    _check_image_region(image_region)
    if not csv_path.is_file():
        raise DataError(f"labels CSV {csv_path} not found")
    try:
        # Strings everywhere: validate() must see "abc" or "" as written, not a silent NaN.
        df = pd.read_csv(csv_path, dtype=object, keep_default_na=False, skipinitialspace=True, index_col=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path}: not a readable CSV ({exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    if "path" not in df.columns:
        raise DataError(f"{csv_path}: no 'path' column; columns are: {', '.join(df.columns) or '(none)'}")
    _check_columns(df, targets, csv_path)
    root = csv_path.resolve().parent
    df.insert(0, "row", range(2, len(df) + 2))
    df["path"] = [str(root / p.strip()) if p.strip() else "" for p in df["path"]]
    for column in df.columns.drop(["row", "path"]):  # object dtype: an empty cell is None, not NaN
        cells = [(v.strip() or None) if isinstance(v, str) else None for v in df[column]]
        df[column] = pd.Series(cells, index=df.index, dtype=object)
    if "gender" in df.columns:
        mapping = {str(k).strip().lower(): v for k, v in (gender_map or {}).items()}
        raw = [mapping.get(v.lower(), v) if v is not None else None for v in df["gender"]]
        df["gender"] = pd.Series([_norm_gender(v) for v in raw], index=df.index, dtype=object)
    known = {"row", "path", "image_region", "cut_by", *TEXT_LABELS, *BOX_COLUMNS}
    for column in df.columns.difference(list(known)):  # labels (eyes, age, ...): numbers when all parse, else
        numbers = pd.to_numeric(df[column], errors="coerce")   # the text, for validate() to name the bad cells
        if numbers.notna().sum() == df[column].notna().sum():
            df[column] = numbers
    if "image_region" in df.columns:
        df["image_region"] = [(v or "photo").lower() for v in df["image_region"]]
    if image_region is not None or "image_region" not in df.columns:
        df["image_region"] = image_region or "photo"
    df.attrs["root"] = str(root)
    return df


def read_folders(root, folders: dict[str, dict], *, image_region=None) -> pd.DataFrame:
    """Folder-per-class layout: `folders` maps a sub-folder of root to the labels of every image in it.

    e.g. {"open": {"eyes": 1.0}, "closed": {"eyes": 0.0}}. Images are *.png/*.jpg/*.jpeg/*.bmp/*.webp
    (any case), sorted by name. A missing or empty folder is a DataError naming it.
    """
    root = Path(root).resolve()
    _check_image_region(image_region)
    if not root.is_dir():
        raise DataError(f"data folder {root} not found")
    missing = [name for name in folders if not (root / name).is_dir()]
    if missing:
        raise DataError(
            f"{root}: class folder(s) not found: {', '.join(missing)}; "
            f"sub-folders present: {', '.join(sorted(p.name for p in root.iterdir() if p.is_dir())) or '(none)'}"
        )
    records = []
    for name, labels in folders.items():
        files = sorted(p for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{root / name}: class folder has no images ({'/'.join(IMAGE_SUFFIXES)})")
        records += [{"path": str(p), **dict(labels or {})} for p in files]
    df = pd.DataFrame.from_records(records)
    if "gender" in df.columns:
        df["gender"] = pd.Series([_norm_gender(v) for v in df["gender"]], index=df.index, dtype=object)
    df["image_region"] = image_region or "photo"
    df.attrs["root"] = str(root)
    return df


def validate(df: pd.DataFrame, *, targets, region, source="") -> pd.DataFrame:
    """Check every row before training; raise ONE DataError listing every bad row, in row order.

    `targets`: {label column: (low, high) or None} (tasks.Task.label_ranges). Checks: the targets' label
    columns exist; each file exists and really decodes (thread pool); a target with a range holds a
    number in it on every row (gender male/female, person non-empty); gender values are known;
    image_region is a region name and fits `region`; whole photos have a parseable `<region>_box`.
    Returns a copy with normalised dtypes (labels float, gender 'male'/'female'/None).
    """
    source = str(source) or "data set"
    if region not in REGION_SIZES:
        raise DataError(f"{source}: unknown region {region!r}; expected one of {', '.join(REGION_SIZES)}")
    _check_columns(df, targets, source)
    if len(df) == 0:
        raise DataError(f"{source}: no images, nothing was trained")
    df = df.copy()
    if "image_region" not in df.columns:
        df["image_region"] = "photo"
    missing = [c for c in box_columns(region) if c not in df.columns]
    if region != "photo" and missing and (df["image_region"] == "photo").any():
        raise DataError(
            f"{source}: region {region!r} is cut from whole photos (image_region='photo'), which needs "
            f"{' and '.join(map(repr, missing))} column(s); columns are: {', '.join(map(str, df.columns))}"
        )

    paths = [str(p) if isinstance(p, (str, os.PathLike)) and str(p) else "" for p in df["path"]]
    targets = _ranges(targets)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        image_problems = list(pool.map(_image_problem, paths))

    where = [_where(record, paths[i], df.attrs.get("root")) for i, (_, record) in enumerate(df.iterrows())]
    bad_labels = _bad_target_labels(df, targets, where)     # {column: [(row, reason)]}
    problems = []  # (row label, reasons) of everything else, in DataFrame order
    texts = {c: None for c in TEXT_LABELS if c in df.columns and c not in targets}
    for i, (_, record) in enumerate(df.iterrows()):
        reasons = [image_problems[i]] if image_problems[i] else []
        for column, bounds in texts.items():
            reason = _label_problem(column, record[column], bounds, required=False)
            if reason:
                reasons.append(reason)
        reasons += _region_problems(record, region)
        if reasons:
            problems.append((where[i], reasons))
    if problems or bad_labels:
        rows = len({row for bad in bad_labels.values() for row, _ in bad} | {row for row, _ in problems})
        lines = [_label_lines(column, bad, targets[column], len(df)) for column, bad in bad_labels.items()]
        lines += [f"  {row}: {'; '.join(reasons)}" for row, reasons in problems[:MAX_LISTED]]
        if len(problems) > MAX_LISTED:
            lines.append(f"  ... and {len(problems) - MAX_LISTED} more bad rows")
        noun = "bad row" if rows == 1 else "bad rows"
        raise DataError(f"{source}: {rows} {noun}, nothing was trained:\n" + "\n".join(lines))

    for column in (c for c, bounds in targets.items() if bounds is not None):
        df[column] = pd.to_numeric(df[column], errors="coerce").astype(float)
    # object dtype so that a missing gender/person is None, as the contract says, not a NaN
    if "gender" in df.columns:
        df["gender"] = pd.Series([_norm_gender(v) for v in df["gender"]], index=df.index, dtype=object)
    if "person" in df.columns:
        people = [None if _is_missing(v) else str(v) for v in df["person"]]
        df["person"] = pd.Series(people, index=df.index, dtype=object)
    return df


def one_row_per_cut(df: pd.DataFrame, region: str) -> pd.DataFrame:
    """A region cut more than once from a whole photo (CUTS: each eye) gives each cut its own row, with
    `cut` (its name) and `<region>_box` (its box); ready crops keep their one row (`cut` empty).

    The rows of one photo share its file and so its content hash, person and near-duplicate group:
    every split rule (data/splits.py) keeps them on the same side.
    """
    if region not in CUTS or not (df["image_region"] == "photo").any():
        return df
    parts = []
    for cut in CUTS[region]:
        part = df.assign(cut=None)
        photos = part["image_region"] == "photo"
        part.loc[photos, "cut"] = cut
        part.loc[photos, f"{region}_box"] = part.loc[photos, f"{region}_{cut}_box"]
        parts.append(part if cut == CUTS[region][0] else part[photos])
    # photo by photo, its cuts next to each other (the first cut keeps the ready crops too)
    order = pd.concat([p.assign(_photo=p.index) for p in parts]).sort_values("_photo", kind="stable")
    return order.drop(columns="_photo").reset_index(drop=True)


def load_dataset(source, *, targets, region, image_region=None, folders=None, gender_map=None) -> pd.DataFrame:
    """Read and validate a data set: a CSV path, a folder with labels.csv, or a folder + `folders` mapping."""
    df = read_data_set(source, targets=targets, image_region=image_region, folders=folders, gender_map=gender_map)
    return validate(df, targets=targets, region=region, source=df.attrs["source"])


def read_data_set(source, *, targets=None, image_region=None, folders=None, gender_map=None) -> pd.DataFrame:
    """Read a data set without opening its images (validate does): a CSV path, a folder with labels.csv, or
    a folder + `folders` mapping. `attrs["source"]`: the file or folder read, for messages."""
    path = Path(source)
    expected = "a labels CSV file, a folder containing labels.csv, or a folder of class sub-folders"
    if not path.exists():
        raise DataError(f"data set {source} not found: expected {expected}")
    if path.is_dir() and folders:
        df = read_folders(path, folders, image_region=image_region)
    else:
        csv_path = path / "labels.csv" if path.is_dir() else path
        if not csv_path.is_file():
            raise DataError(f"data set {source}: no labels.csv in this folder and no `folders` mapping given")
        df = read_manifest(csv_path, targets=targets, image_region=image_region, gender_map=gender_map)
        path = csv_path
    df.attrs["source"] = str(path)
    return df


# --- helpers ---------------------------------------------------------------------------------------


def _bad_target_labels(df: pd.DataFrame, targets: dict, where: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Each target column's rows whose label is empty, not a number or outside its declared range."""
    out = {}
    for column, bounds in targets.items():
        bad = [(where[i], reason) for i, value in enumerate(df[column])
               if (reason := _label_problem(column, value, bounds, required=True))]
        if bad:
            out[column] = bad
    return out


def _label_lines(column: str, bad: list[tuple[str, str]], bounds, rows: int) -> str:
    """The column, how many of its rows are bad and the first LISTED_ROWS of them."""
    wanted = "label" if bounds is None else f"number in {bounds[0]:g}..{bounds[1]:g}"
    shown = "\n".join(f"    {row}: {reason}" for row, reason in bad[:LISTED_ROWS])
    more = f"\n    ... and {len(bad) - LISTED_ROWS} more" if len(bad) > LISTED_ROWS else ""
    return f"  column `{column}`: {len(bad)} of {rows} rows hold no {wanted}:\n{shown}{more}"


def _ranges(targets) -> dict:
    """{column: range or None}; a bare column name is a 0..1 score (as `target: eyes` declares one), gender
    and person are text."""
    if isinstance(targets, Mapping):
        return dict(targets)
    return {t: None if t in TEXT_LABELS else (0.0, 1.0) for t in targets}


def _check_columns(df: pd.DataFrame, targets, source) -> None:
    missing = [t for t in (targets or ()) if t not in df.columns]
    if missing:
        raise DataError(
            f"{source}: no label column {', '.join(map(repr, missing))} for the target(s); "
            f"columns are: {', '.join(map(str, df.columns))}"
        )


def _check_image_region(image_region) -> None:
    if image_region is not None and image_region not in REGION_SIZES:
        raise DataError(f"image_region {image_region!r} is not one of {', '.join(REGION_SIZES)}")


def _is_missing(value) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    return value is None or (isinstance(value, str) and not value.strip())


def _norm_gender(value):
    """'male'/'female' for known spellings, None for missing, the raw value otherwise (validate reports it)."""
    if _is_missing(value):
        return None
    return _GENDER_ALIASES.get(str(value).strip().lower(), value)


def _image_problem(path: str) -> str | None:
    if not path:
        return "no path"
    if not os.path.isfile(path):
        return "file not found"
    try:
        load_rgb(path)
    except DataError as exc:
        return str(exc).removeprefix(f"{path}: ")
    return None


def _label_problem(column: str, value, bounds, *, required: bool) -> str | None:
    """Why `value` is no label for `column` (`bounds`: its declared range; None: text), or None."""
    if column in TEXT_LABELS and _is_missing(value):
        return f"{column} is empty" if required else None
    if column == "gender":
        return None if _norm_gender(value) in GENDERS else f"gender={value!r} is not male/female (or M/F)"
    if bounds is None:
        return None
    if value is None or (isinstance(value, str) and not value.strip()):
        return f"{column} is empty" if required else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"{column}={value!r} is not a number"
    if math.isnan(number):
        return f"{column} is NaN" if required else None
    low, high = bounds
    if not low <= number <= high:
        return f"{column}={value} is outside {low:g}..{high:g}"
    return None


def _region_problems(record, region: str) -> list[str]:
    shows = record["image_region"]
    if shows not in REGION_SIZES:
        return [f"image_region={shows!r} is not one of {', '.join(REGION_SIZES)}"]
    if shows != "photo":
        return [] if shows == region else [f"image is a {shows} crop but the model needs {region}"]
    if region == "photo":
        return []
    problems = []
    for column in box_columns(region):
        box = record[column]
        if _is_missing(box):
            problems.append(f"{column} is empty (needed to cut {region} from the whole photo)")
            continue
        try:
            parse_box(box)
        except DataError as exc:
            problems.append(f"{column}: {exc}")
    return problems


def _where(record, path: str, root) -> str:
    """'row 3 images/a.jpg' (CSV) or 'open/a.png' (folders): the path as the user wrote it, when possible."""
    shown = path
    if root and path:
        try:
            shown = Path(path).relative_to(root).as_posix()
        except ValueError:
            pass
    row = record.get("row")
    return f"row {int(row)} {shown}" if row is not None and not _is_missing(row) else shown
