"""`mlflow run .` (entry point `main`) / `faceattr pipeline`: train and promote every model, gender first.

Each step is its own process (`python -m faceattr train|promote ...`) with `MLFLOW_RUN_ID` removed, so
each training is a run in its own experiment and each decision a run in `promote-<model>`; the
regressions trained after gender's promotion read `models:/gender@champion` (gender_input.py).
A refused promotion is a result, not a failure: the pipeline goes on and reports it; any other
failing step stops the pipeline with that step's exit code.
"""

from __future__ import annotations

import os
import subprocess
import sys

from faceattr import names

ORDER = ("gender", "background", "eyes", "mouth")


def run_pipeline(models: list[str], epochs: str = "", data: str = "synthetic", data_size: str = "",
                 extra: list[str] | None = None) -> int:
    from faceattr import tracking
    from faceattr import promotion as promote

    models = sorted((m.strip() for m in models if m.strip()), key=lambda m: ORDER.index(m) if m in ORDER else 99)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID",
                                                             "MLFLOW_EXPERIMENT_NAME")}
    train_args = ["--data", data] + (["--epochs", epochs] if epochs else []) \
        + (["--data.size", data_size] if data_size else []) + list(extra or [])
    summary: dict[str, str] = {}
    tracking.use_experiment("pipeline")
    with tracking.start_run("pipeline") as run:
        run.log_params({"models": ",".join(models), "epochs": epochs or "default", "data": data,
                             "data_size": data_size or "default"})
        for model in models:
            for step in (["train", model, *train_args], ["promote", model]):
                print(f"faceattr pipeline: {' '.join(step)}", flush=True)
                code = subprocess.call([sys.executable, "-m", "faceattr", *step], env=env)
                if step[0] == "promote" and code in (0, promote.REFUSED):
                    summary[model] = "promoted" if code == 0 else "refused"
                elif code != 0:
                    run.set_tags({names.FAILED_STEP: " ".join(step)})
                    print(f"faceattr pipeline: `{' '.join(step)}` failed (exit {code}); stopping", file=sys.stderr)
                    return code
            run.set_tags({names.PREFIX + model: summary[model]})
    print(f"faceattr pipeline: done: {summary}")
    return 0
