"""`faceattr report`: the page's numbers are the runs' numbers, trials are summarised, plots decode, the
champion's logged gallery and slices are shown, promotions are listed, and the page is logged as a run."""

import base64
import io
import re
import statistics

import mlflow
import pandas as pd
import pytest
from PIL import Image

from faceattr import registry
from faceattr.names import ROLE
from faceattr.tracking import read_artifact
from faceattr.cli import main
from faceattr import promotion

# Two configurations over seeds; the third is a search's seed repeats. val_mse per seed.
CONFIGS = {"64": {0: 0.031, 1: 0.027, 2: 0.035}, "128": {0: 0.022, 1: 0.026}}
REPEATS = {0: 0.019, 1: 0.021}
TRIALS = 4


def training_run(client, experiment_id, dense, seed, val_mse, parent=None, role=None):
    tags = {"mlflow.runName": f"eyes-{dense}-s{seed}", "faceattr.experiment": "eyes"}
    if parent:
        tags.update({"mlflow.parentRunId": parent, ROLE: role})
    run = client.create_run(experiment_id, tags=tags)
    run_id = run.info.run_id
    for key, value in {"task": "regression", "model.dense_0": dense, "train.seed": seed,
                       "train.epochs": 3, "data.digest": "abc123"}.items():
        client.log_param(run_id, key, value)
    for key, value in {"val_mse": val_mse, "baseline_ratio": 0.05 / val_mse, "val_accuracy_at_0_5": 1 - val_mse * 5,
                       "test_mse": val_mse * 1.1, "gender_weight_swap": val_mse / 10}.items():
        client.log_metric(run_id, key, value)
    for epoch in range(3):
        client.log_metric(run_id, "loss", 0.1 / (epoch + 1) + seed / 100, step=epoch)
        client.log_metric(run_id, "val_loss", 0.12 / (epoch + 1) + seed / 100, step=epoch)
    client.set_terminated(run_id)
    return run_id


def logged_artifacts(client, run_id, tmp_path):
    """What a run with the per-run galleries and slices logs: a gallery PNG, a slices table, slice metrics."""
    gallery = tmp_path / "error_gallery.png"
    Image.new("RGB", (240, 120), (200, 30, 30)).save(gallery)
    client.log_artifact(run_id, str(gallery), "plots")
    client.log_table(run_id, pd.DataFrame({"slice": ["gender=female", "gender=male"], "photos": [41, 39],
                                           "val_mse": [0.0312, 0.0288]}), "slices.json")
    client.log_metric(run_id, "val_accuracy.slice.gender.female", 0.875)
    client.set_tag(run_id, "leans_on_gender", "false")


@pytest.fixture
def experiment(mlflow_store, tmp_path):
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment("eyes")
    runs = {(dense, seed): training_run(client, experiment_id, dense, seed, mse)
            for dense, seeds in CONFIGS.items() for seed, mse in seeds.items()}
    search = client.create_run(experiment_id, tags={"mlflow.runName": "eyes-tune-hyperband", ROLE: "search"})
    client.log_metric(search.info.run_id, "best_val_mse", 0.0205)
    for trial in range(TRIALS):
        trial_run = client.create_run(experiment_id, tags={"mlflow.runName": f"eyes-trial-{trial}",
                                                           "mlflow.parentRunId": search.info.run_id,
                                                           ROLE: "trial"})
        client.log_param(trial_run.info.run_id, "model.dense_0", 32 * (trial + 1))
        client.log_metric(trial_run.info.run_id, "val_mse", 0.5)
    for seed, mse in REPEATS.items():
        training_run(client, experiment_id, "256", seed, mse, parent=search.info.run_id, role="repeat")
    logged_artifacts(client, runs[("64", 0)], tmp_path)
    # v1 from the first configuration's seed 0, v2 from the second's seed 1; v2 promoted, then rolled back
    client.create_registered_model("eyes")
    for key in (("64", 0), ("128", 1)):
        client.log_text(runs[key], "x", "model/placeholder.txt")   # the registry moves never load a model
        client.create_model_version("eyes", f"{client.get_run(runs[key]).info.artifact_uri}/model", run_id=runs[key])
    registry.record("eyes", "1", {registry.PREVIOUS: "none"})
    registry.move_champion("eyes", "1")
    with promotion._audit_run("eyes", "promote", "2") as audit:
        promotion._log(audit, {"decision": "promoted", "reasons": "-"},
                       {"challenger_version": "2", "champion_version": "1", "policy.metric": "val_mse"},
                       {"challenger_val_mse": 0.0252, "champion_val_mse": 0.0311})
    registry.record("eyes", "2", {registry.PREVIOUS: "1"})
    registry.move_champion("eyes", "2")
    promotion.rollback("eyes")
    return client, runs


def row(page, row_id):
    return re.search(rf'<tr id="{row_id}">(.*?)</tr>', page, re.S).group(1)


def section(page, role):
    return re.search(rf'<section class="contender {role}">(.*?)</section>', page, re.S).group(1)


def test_report_compares_configurations_over_seeds_and_is_logged(experiment, tmp_path, capsys):
    client, runs = experiment
    out = tmp_path / "out" / "eyes.html"
    assert main(["report", "eyes", "--out", str(out)]) == 0
    page = out.read_text()
    for heading in ("configurations", "searches", "curves", "contenders", "promotions"):
        assert f'id="{heading}"' in page, heading

    # one row per configuration, mean ± sample std over its seeds, computed here independently
    assert re.findall(r'<tr id="(C\d+)">', page) == ["C1", "C2", "C3"]
    for row_id, seeds in (("C1", CONFIGS["64"]), ("C2", CONFIGS["128"]), ("C3", REPEATS)):
        values = list(seeds.values())
        cells = row(page, row_id)
        assert f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}" in cells
        ratios = [0.05 / v for v in values]
        assert f"{statistics.mean(ratios):.4g} ± {statistics.stdev(ratios):.2g}" in cells
        assert f"<td class=\"num\">{len(values)}</td>" in cells
    assert "model.dense_0=64" in row(page, "C1") and "model.dense_0=256" in row(page, "C3")

    # the search's trials are one summarised row, not four configurations
    searches = re.search(r'<table class="searches">(.*?)</table>', page, re.S).group(1)
    assert "eyes-tune-hyperband" in searches and f'<td class="num">{TRIALS}</td>' in searches
    assert "0.0205" in searches
    assert "eyes-trial-0" not in page

    # every picture is a PNG that decodes: the learning curves and the champion's gallery
    pictures = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pictures) == 2
    for picture in pictures:
        Image.open(io.BytesIO(base64.b64decode(picture))).verify()

    # champion (v1 after the rollback) with its run's gallery and slices; challenger v2 without
    champion, challenger = section(page, "champion"), section(page, "challenger")
    assert "version 1" in champion and "version 2" in challenger
    assert 'alt="champion gallery"' in champion and "no gallery logged" in challenger
    assert "gender=female" in champion and "0.0312" in champion and "no slices logged" in challenger
    assert "val_accuracy.slice.gender.female" in champion and "0.875" in champion

    # the promotion history, newest first
    decisions = re.search(r'<table class="promotions">(.*?)</table>', page, re.S).group(1)
    assert decisions.index("rolled-back") < decisions.index("promoted")
    assert "0.0252" in decisions and "0.0311" in decisions

    # logged as report.html of a `report` run in the same experiment; a second report leaves it out
    (report_run,) = client.search_runs([client.get_experiment_by_name("eyes").experiment_id],
                                       f"tags.`{ROLE}` = 'report'")
    assert report_run.info.run_name == "report"
    assert read_artifact(report_run.info.run_id, "report.html").decode() == page
    assert f"of run {report_run.info.run_id}" in capsys.readouterr().out
    assert main(["report", "eyes", "--out", str(tmp_path / "again.html")]) == 0
    again = (tmp_path / "again.html").read_text()
    assert "1 earlier report run(s) left out" in again
    assert re.findall(r'<tr id="(C\d+)">', again) == ["C1", "C2", "C3"]

    # the challenger is the newest version that is not the champion, also when the champion is the newest
    client.log_text(runs[("128", 0)], "x", "model/placeholder.txt")
    client.create_model_version("eyes", f"{client.get_run(runs[('128', 0)]).info.artifact_uri}/model",
                                run_id=runs[("128", 0)])
    registry.record("eyes", "3", {registry.PREVIOUS: "1"})
    registry.move_champion("eyes", "3")
    assert main(["report", "eyes", "--out", str(out)]) == 0
    page = out.read_text()
    assert "version 3" in section(page, "champion") and "version 2" in section(page, "challenger")


def test_unknown_experiment_is_a_clear_error_before_any_run(mlflow_store, capsys):
    mlflow.MlflowClient().create_experiment("eyes")
    assert main(["report", "nose"]) == 2
    err = capsys.readouterr().err
    assert "no MLflow experiment named 'nose'" in err and "eyes" in err
    assert main(["report", "eyes"]) == 2
    assert "has no runs to compare" in capsys.readouterr().err
    assert mlflow.search_runs(search_all_experiments=True).empty


@pytest.mark.slow
def test_report_of_real_training_runs_over_two_seeds(mlflow_store, synthetic_cache, tmp_path):
    for seed in ("0", "1"):
        assert main(["train", "eyes", "--epochs", "2", "--seed", seed, "--data.size", "120", "--train.verbose", "0"]) == 0
    assert main(["report", "eyes", "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    runs = mlflow.search_runs(experiment_names=["eyes"], filter_string=f"tags.`{ROLE}` = 'report'")
    assert len(runs) == 1
    trained = mlflow.search_runs(experiment_names=["eyes"], filter_string="params.`train.epochs` = '2'")
    assert sorted(trained["params.train.seed"]) == ["0", "1"]
    (config,) = re.findall(r'<tr id="(C\d+)">', page)
    cells = row(page, config)
    for key in ("val_mse", "baseline_ratio"):
        values = list(trained[f"metrics.{key}"])
        assert f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}" in cells, key
    assert "<td>0, 1</td>" in cells and 'alt="learning curves"' in page
    # both runs registered a version; none is champion yet: the newest is the challenger
    assert "no champion yet" in page and "challenger: version 2" in page
    # the run views (faceattr/views.py) logged by real training: the gallery and the slices table
    assert 'alt="challenger predicted vs true"' in page and 'alt="challenger gallery"' in page
    assert "no gallery logged" not in page and '<table class="slices">' in page
    assert "No promotion of <code>eyes</code> yet" in page
