"""Batch scoring on Spark: `faceattr predict PHOTOS --model URI --engine spark [--master URL] --out OUT.parquet`.

The logged model runs through MLflow's own `mlflow.pyfunc.spark_udf` (env_manager local: the workers use
this Python environment), the photos read by Spark's `binaryFile` source and handed over as bytes:
- PHOTOS: a folder (every image below it), a glob, or a manifest (.csv/.parquet, read and checked here
  before Spark starts) whose `path` column names the files and whose other columns are carried through;
- the rows are spread over the cores (`repartition`); an Arrow batch holds at most `batch_size` photos
  (within the model's MAX_ROWS per call);
- the output is one row per input: the path, the input's columns, the answer's `pred_*` columns and
  `error` (why a photo has no answer: unreadable, truncated, oversized, no face, file not found).
The model loads once per Python worker, not once per task: Spark reuses its Python workers
(`spark.python.worker.reuse`) and FaceattrModel.load_context keeps what it loaded per process; every
load is counted (serving.model.LOAD_LOG) and reported in local mode.

Needs the `spark` extra (pip install -e '.[spark]') and Java 17 (Debian: apt-get install
openjdk-17-jre-headless). docs/spark.md: a standalone cluster, spark-submit.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from faceattr.data.manifest import IMAGE_SUFFIXES
from faceattr.errors import DataError, FaceattrError
from faceattr.serving import model as served
from faceattr.serving.batch import ANSWER_PREFIX, INPUT_COLUMNS, read_manifest

INSTALL = "pip install -e '.[spark]' (pyspark) and Java 17 (Debian: apt-get install openjdk-17-jre-headless)"
# Whole numbers travel as double: spark_udf casts each answer column with numpy's astype, and an integer
# column cannot hold the gaps a row-by-row answer has (`faces` is empty for a crop, every column for a bad
# row); a double keeps them as null.
SPARK_TYPES = {"double": "double", "float": "float", "long": "double", "integer": "double", "boolean": "boolean",
               "string": "string"}


@dataclass
class Outcome:
    rows: int         # inputs, and rows written: one per input
    scored: int       # rows with an answer (empty `error`)
    loads: int | None  # model loads by the Python workers (local masters; None on a cluster)
    master: str
    seconds: float


def require_spark() -> None:
    """pyspark importable and a Java to run it, or one FaceattrError saying what to install."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise FaceattrError(f"--engine spark needs pyspark, which is not installed: {INSTALL}") from None
    java_home = os.environ.get("JAVA_HOME")
    if not (shutil.which("java") or (java_home and (Path(java_home) / "bin" / "java").is_file())):
        raise FaceattrError(f"--engine spark needs Java (no `java` on PATH, no JAVA_HOME): {INSTALL}")


def session(master: str | None = None, batch_size: int = 64, load_log: str | None = None):
    """A SparkSession for scoring: local[cores] unless a master URL is given; Python workers reused
    (one model load each); Arrow batches within the model's row limit; one TensorFlow thread per worker
    (the workers, one per core, use the cores)."""
    require_spark()
    from pyspark.sql import SparkSession

    if master is None and not os.environ.get("PYSPARK_GATEWAY_PORT"):   # not under spark-submit (its --master)
        master = f"local[{os.cpu_count() or 1}]"
    builder = SparkSession.builder.appName("faceattr-predict")
    if master:
        builder = builder.master(master)
    builder = (builder
               .config("spark.python.worker.reuse", "true")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(min(batch_size, served.MAX_ROWS)))
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.executorEnv.TF_CPP_MIN_LOG_LEVEL", "2")
               .config("spark.executorEnv.TF_NUM_INTRAOP_THREADS", "1")
               .config("spark.executorEnv.TF_NUM_INTEROP_THREADS", "1"))
    if master and master.startswith("local"):   # the workers run this environment (pyspark reads the variable itself)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if load_log:
        builder = builder.config(f"spark.executorEnv.{served.LOAD_LOG}", load_log)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def read_photos(spark, source: str, kind: str = "crop"):
    """A DataFrame of (path, content, kind, the manifest's columns): one row per input. A manifest's file
    that is missing gets content null (its row answers "file not found")."""
    from pyspark.sql import functions as F

    path = Path(source).expanduser()
    photos = spark.read.format("binaryFile")
    if path.suffix.lower() in (".csv", ".parquet") and path.is_file():
        manifest = read_manifest(path, kind)
        manifest["path"] = [os.path.abspath(p) if "://" not in p else p for p in manifest["path"]]
        found = [p for p in dict.fromkeys(manifest["path"]) if "://" in p or os.path.isfile(p)]
        rows = spark.createDataFrame(manifest)
        if not found:
            return rows.withColumn("content", F.lit(None).cast("binary"))
        files = photos.load(found).select(F.col("path").alias("_uri"), "content")
        return rows.join(files, rows["path"] == _local(files["_uri"]), "left").drop("_uri")
    if path.is_dir():
        suffixes = "|".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
        frame = (photos.option("recursiveFileLookup", "true").load(str(path.resolve()))
                 .where(F.lower("path").rlike(rf"\.({suffixes})$")))
    else:   # a glob (or one file): Spark expands it; nothing matching is Spark's AnalysisException
        frame = photos.load(source)
    return frame.select(_local(F.col("path")).alias("path"), "content", F.lit(kind).alias("kind"))


def _local(uri):
    """A local file's URI as Spark writes it (file:/a/b.jpg) as the plain path (/a/b.jpg)."""
    from pyspark.sql import functions as F

    return F.regexp_replace(uri, "^file:", "")


def result_type(model_uri: str) -> str:
    """The answer's Spark type: the model's output columns (its signature) and `error`."""
    import mlflow

    outputs = mlflow.models.get_model_info(model_uri).signature.outputs.inputs
    fields = [(c.name, SPARK_TYPES[str(c.type).split(".")[-1].lower()]) for c in outputs if c.name != served.ERROR]
    return ", ".join(f"`{name}` {kind}" for name, kind in [*fields, (served.ERROR, "string")])


def score(spark, photos, model_uri: str):
    """`photos` (read_photos) with the answer's `pred_*` columns and `error`, one row per input."""
    import mlflow
    from pyspark.sql import functions as F

    answer_type = result_type(model_uri)
    declared = mlflow.models.get_model_info(model_uri).signature.params
    # a bundle's faces_found as JSON text: a table's cell (serving/bundle.py)
    params = {"faces_found": "json"} if declared and "faces_found" in [p.name for p in declared.params] else None
    predict = mlflow.pyfunc.spark_udf(spark, model_uri, result_type=answer_type, env_manager="local", params=params)
    readable = photos.where(F.col("content").isNotNull())
    readable = readable.repartition(4 * spark.sparkContext.defaultParallelism)   # a few tasks per core
    request = F.struct(F.col("content").alias("image"),
                       *[F.col(c) for c in INPUT_COLUMNS[1:] if c in photos.columns])
    answered = readable.withColumn("_answer", predict(request))
    names = [f.name for f in answered.schema["_answer"].dataType.fields]
    answered = answered.select(*[c for c in photos.columns if c != "content"],
                               *[F.col("_answer")[n].alias(ANSWER_PREFIX + n) for n in names if n != served.ERROR],
                               no_error_is_null(F.col("_answer")[served.ERROR]).alias(served.ERROR))
    missing = (photos.where(F.col("content").isNull()).drop("content")
               .withColumn(served.ERROR, F.lit("file not found")))
    return answered.unionByName(missing, allowMissingColumns=True)


def no_error_is_null(error):
    """The answer's `error`, null where the row was answered. mlflow's spark_udf casts a string column
    holding a reason and a None with numpy's str (`astype(np.str_)`), so in a batch with a refused photo the
    answered rows' None arrives as the text "None"; the served model never gives that reason."""
    from pyspark.sql import functions as F

    return F.when(error != "None", error)


def predict(source: str, model_uri: str, out: str, kind: str = "crop", master: str | None = None,
            batch_size: int = 64) -> Outcome:
    """Score PHOTOS on Spark into the Parquet folder `out`."""
    started = time.perf_counter()
    path = Path(source).expanduser()
    if path.suffix.lower() in (".csv", ".parquet") and path.is_file():
        read_manifest(path, kind)   # its errors (no `path` column, ...) before Spark starts
    elif not (path.is_dir() or glob.has_magic(source) or path.is_file()):
        raise DataError(f"{source}: not a folder of images, a glob or a manifest (.csv, .parquet)")
    require_spark()
    load_log = tempfile.mkdtemp(prefix="faceattr-loads-")
    spark = session(master, batch_size, load_log)
    try:
        frame = score(spark, read_photos(spark, source, kind), model_uri)
        frame.write.mode("overwrite").parquet(out)
        written = spark.read.parquet(out)
        rows = written.count()
        scored = written.where(written[served.ERROR].isNull()).count()
        local = spark.sparkContext.master.startswith("local")
        return Outcome(rows, scored, len(os.listdir(load_log)) if local else None, spark.sparkContext.master,
                       time.perf_counter() - started)
    finally:
        spark.stop()
        shutil.rmtree(load_log, ignore_errors=True)
