"""Models logged before the renovation (commit e3f89f2: serving.py a module, no tasks.py) still load and
answer the same through today's serving package."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import REPO, require

BEFORE = "e3f89f2"   # the last commit with faceattr/serving.py as one module

LOG_WITH_OLD_CODE = """
import json, sys
import numpy as np, pandas as pd
from faceattr import config, experiment
from faceattr.data.regions import REGION_SIZES
from faceattr.registry import load_faceattr_model
from faceattr.serving import encode_image

out = {}
for name in ("eyes", "gender"):
    outcome = experiment.train(config.load(name, {"data.size": 40, "epochs": 1, "train.verbose": 0}), register=False)
    served = load_faceattr_model(outcome.model_uri)
    height, width = REGION_SIZES[served.spec["region"]]
    crops = np.random.default_rng(0).integers(0, 255, (4, height, width, 3), dtype=np.uint8)
    request = pd.DataFrame({"image": [encode_image(c) for c in crops], "gender": ["female", "male", "", ""]})
    answer = served.predict(None, request)
    out[name] = {"uri": outcome.model_uri, "request": request.to_dict("list"), "answer": answer.to_dict("list")}
json.dump(out, open(sys.argv[1], "w"))
"""


@pytest.mark.slow
def test_a_model_logged_before_the_renovation_answers_the_same(mlflow_store, synthetic_cache, tmp_path):
    from faceattr import serving

    old = tmp_path / "old"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE, "faceattr", "experiments", "registry"],
                             capture_output=True)
    require(archive.returncode == 0, f"git history with commit {BEFORE} (a full clone of the repository): "
                                     f"{archive.stderr.decode()[-300:]}")
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    script = tmp_path / "log_old.py"
    script.write_text(LOG_WITH_OLD_CODE)
    env = {**os.environ, "PYTHONPATH": str(old), "MLFLOW_TRACKING_URI": mlflow_store}
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "old.json")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    logged = json.loads((tmp_path / "old.json").read_text())
    assert not str(serving.__file__).startswith(str(old))          # today's serving package answers
    for name, record in logged.items():
        model = serving.load(record["uri"])
        answer = model.predict(None, pd.DataFrame(record["request"]))
        before = pd.DataFrame(record["answer"])
        assert list(answer.columns) == list(before.columns) + ["faces", "error"], name   # today's answer: row by row
        assert answer["error"].isna().all(), name
        assert model.record.format == 0 and model.record.faceattr is None   # its spec.json, read by record.read
        for column in before:
            if before[column].dtype.kind == "f":
                assert np.allclose(answer[column].astype(float), before[column], atol=1e-6), (name, column)
            else:
                assert list(answer[column]) == list(before[column]), (name, column)
