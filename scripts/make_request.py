#!/usr/bin/env python
"""Build a scoring request for `mlflow models serve` from photos: one row per file.

    python scripts/make_request.py eyes1.jpg eyes2.png [--kind crop|photo] [--gender female] > request.json
    curl -X POST localhost:5001/invocations -H 'Content-Type: application/json' -d @request.json

Any JPEG/PNG is sent as it is (base64 of the file's bytes); the model decodes and resizes it as in training.
`--kind crop` (default): the file is a ready crop of the model's region (eyes band, mouth, face);
`--kind photo`: a whole photo: the served model finds the face (MTCNN, as `faceattr prepare` and
training do) and cuts its own region from it, for every model (README, Serving); a model whose training
crops that cut cannot match answers that row with its reason in the `error` column (HTTP 200: the other
rows are answered).

No crop at hand? `--example REGION OUT.png` writes one: REGION's crop (eyes, mouth, face, ...) of the
first photo of the default synthetic data set (generated into the cache by the first
`faceattr train`, else here), cut with the boxes its manifest holds:

    python scripts/make_request.py --example eyes eye_band.png
"""

import argparse
import base64
import json
import sys
from pathlib import Path


def request(paths, kind="crop", gender=None) -> dict:
    rows = []
    for path in paths:
        row = {"image": base64.b64encode(Path(path).read_bytes()).decode("ascii"), "kind": kind}
        if gender:
            row["gender"] = gender
        rows.append(row)
    return {"dataframe_records": rows}


def example(region: str, out: Path) -> Path:
    """Write REGION's crop of the default synthetic data set's first photo to `out` (a PNG)."""
    import pandas as pd
    from PIL import Image

    from faceattr.data import regions, synthetic

    labels = synthetic.default_dataset()
    first = pd.read_csv(labels).iloc[0]
    box = None if region == "photo" else regions.parse_box(first[regions.box_columns(region)[0]])
    crop = regions.crop_region(regions.load_rgb(labels.parent / first["path"]), region, box)
    Image.fromarray(crop).save(out)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("photos", nargs="*", help="JPEG/PNG files")
    parser.add_argument("--kind", choices=("crop", "photo"), default="crop")
    parser.add_argument("--gender", choices=("male", "female"), help="gender input of a regression (optional)")
    parser.add_argument("--example", nargs=2, metavar=("REGION", "OUT"),
                        help="write REGION's crop of a synthetic photo to OUT (a PNG) and stop")
    args = parser.parse_args(argv)
    if args.example:
        print(f"make_request: wrote {example(args.example[0], Path(args.example[1]))}", file=sys.stderr)
        return 0
    if not args.photos:
        parser.error("give JPEG/PNG files (or --example REGION OUT)")
    missing = [p for p in args.photos if not Path(p).is_file()]
    if missing:
        print(f"make_request: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    json.dump(request(args.photos, args.kind, args.gender), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
