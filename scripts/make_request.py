#!/usr/bin/env python
"""Build a scoring request for `mlflow models serve` from photos: one row per file.

    python scripts/make_request.py eyes1.jpg eyes2.png [--kind crop|photo] [--gender female] > request.json
    curl -X POST localhost:5001/invocations -H 'Content-Type: application/json' -d @request.json

Any JPEG/PNG is sent as it is (base64 of the file's bytes); the model decodes and resizes it as in training.
`--kind crop` (default): the file is a ready crop of the model's region (eyes band, mouth, face);
`--kind photo`: a whole photo (only models of region `photo`, e.g. background, take these for now).
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="+", help="JPEG/PNG files")
    parser.add_argument("--kind", choices=("crop", "photo"), default="crop")
    parser.add_argument("--gender", choices=("male", "female"), help="gender input of a regression (optional)")
    args = parser.parse_args(argv)
    missing = [p for p in args.photos if not Path(p).is_file()]
    if missing:
        print(f"make_request: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    json.dump(request(args.photos, args.kind, args.gender), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
