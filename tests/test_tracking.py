"""tracking.py details that a whole training run would not pin down."""

from unittest import mock

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from faceattr import tracking


def test_a_data_set_logged_by_two_processes_at_once_is_linked_not_lost(mlflow_store):
    """Tuning workers log the same data set together; MLflow's check-then-insert can lose that race."""
    dataset = mlflow.data.from_pandas(pd.DataFrame({"a": [1, 2]}), source="x", name="n")
    real, calls = mlflow.log_input, []

    def lost_race(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id")
        return real(*args, **kwargs)

    with mlflow.start_run() as run, mock.patch("mlflow.log_input", lost_race):
        tracking._log_input(dataset)
    assert len(calls) == 2
    assert [i.dataset.name for i in mlflow.get_run(run.info.run_id).inputs.dataset_inputs] == ["n"]
