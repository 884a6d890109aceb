"""Train, compare, promote and serve face-attribute models, every run tracked in MLflow.

(For developers: the commands are thin wrappers that check their arguments, then call the package.)

Extra `--section.key value` arguments override any key of the experiment YAML; this is also how
`mlflow run . -e eyes -P model.dense_0=64` reaches us (MLflow passes undeclared -P values that way).
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import sys
import tempfile
import threading
import warnings

# Before MLflow and TensorFlow are first imported: their INFO lines and progress bars are noise to a person
# at a shell (WARNING and ERROR still show); a user's own setting wins. TF_CPP_MIN_LOG_LEVEL=2 keeps
# TensorFlow's C++ ERROR lines once it has started (its import-time lines ignore it: `import_tensorflow`).
for _name, _value in {"TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_LOGGING_LEVEL": "WARNING",
                      "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
    os.environ.setdefault(_name, _value)

from faceattr import config as config_module  # noqa: E402
from faceattr import names  # noqa: E402
from faceattr.errors import FaceattrError  # noqa: E402

# TensorFlow's import-time C++ lines: INFO/WARNING records (I1204 ..., W1204 ...), absl's notice before
# them, the CPU-instructions note's second line and, on a machine without a GPU, CUDA's cuInit error. Other
# E and F records are kept.
IMPORT_NOISE = re.compile(r"(?:[IW]\d{4} |WARNING: All log messages before absl::InitializeLog\(\)|"
                          r"To enable the following instructions:|"
                          r"E\d{4} .*failed call to cuInit)")   # no GPU here: nothing a user can act on
def import_tensorflow() -> None:
    """Import TensorFlow with its import-time INFO/WARNING lines dropped (TF_CPP_MIN_LOG_LEVEL does not
    reach them: they are logged before absl is initialised, tensorflow#100442); every other line it
    writes, errors included, is passed on to stderr."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines(keepends=True):
                if not IMPORT_NOISE.match(line):
                    sys.stderr.write(line)


def quiet_libraries() -> None:
    """MLflow's notice, on every logged model, that the signature it infers has integer columns: about
    how faceattr logs its model, nothing a user can act on."""
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column", category=UserWarning)


# A switch written alone (`--dry-run`) or with a value (`--dry-run false`: how MLproject passes its -P).
SWITCH, SWITCH_HELP = "true|false", " (alone: true)"


OVERRIDES_HELP = ("Any other --section.key VALUE (or --section.key=VALUE) overrides that key of the experiment "
                  "YAML, e.g. --model.dense_0 64 --train.learning_rate 3e-4 --data.size 500; "
                  "`mlflow run . -e NAME -P section.key=VALUE` reaches it the same way. A key the experiment "
                  "does not have is an error, and so is an abbreviated option (--epoch is not --epochs).")


class Parser(argparse.ArgumentParser):
    """Every parser and subparser: no prefix matching (argparse would take `--epoch 1`, and `mlflow run
    -P epoch=1`, as `--epochs 1` while the run records the YAML's epochs)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def parse_overrides(extra: list[str]) -> dict[str, str]:
    """['--model.dense_0', '64', '--train.verbose=1'] -> {'model.dense_0': '64', 'train.verbose': '1'}."""
    out: dict[str, str] = {}
    i = 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--"):
            raise FaceattrError(f"unexpected argument {arg!r}: overrides look like --section.key VALUE")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        elif i + 1 < len(extra):
            key, value = arg[2:], extra[i + 1]
            i += 2
        else:
            raise FaceattrError(f"{arg} needs a value")
        out[key.replace("-", "_") if "." not in key else key] = value
    return out


def common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help=f"experiment name ({', '.join(config_module.available())}) or YAML path")
    parser.add_argument("--epochs", help="most epochs to train (early stopping may end sooner)")
    parser.add_argument("--batch-size", dest="batch_size")
    parser.add_argument("--data", help="'synthetic' (default) or a manifest CSV / data set folder")
    parser.add_argument("--seed", help="training seed")


def load_config(args, extra: list[str]) -> dict:
    overrides = {k: getattr(args, k) for k in ("epochs", "batch_size", "data", "seed")
                 if getattr(args, k, None) not in (None, "")}
    overrides.update(parse_overrides(extra))   # config.load names a key the experiment does not have
    return config_module.load(args.experiment, overrides)


def cmd_train(args, extra) -> int:
    config = load_config(args, extra)   # a typo is refused here, before TensorFlow and MLflow are imported
    import_tensorflow()
    from faceattr import tasks
    from faceattr.experiment import train
    from faceattr.tracking.outbox import http_defaults

    http_defaults()   # a dead tracking server is noticed in seconds, not minutes (faceattr/tracking/outbox.py)
    outcome = train(config, register=args.register, few_photos=args.register_few_photos)
    task = tasks.of(config)   # its headline follows its declared target (age: val_mae in years)
    headline = [*task.headline, f"val_{task.accuracy_key}"]
    headline += [f"test_{k[4:]}" for k in headline if k.startswith("val_")] + ["collapse_std_ratio"]
    shown = {k: round(outcome.metrics[k], 4) for k in dict.fromkeys(headline) if k in outcome.metrics}
    leans = outcome.tags.get(names.LEANS_ON_GENDER)   # regressions only (faceattr/views.py)
    print(f"faceattr: done: {shown} collapsed={outcome.tags[names.COLLAPSED]}"
          + (f" leans_on_gender={leans}" if leans else "") + f" model={outcome.model_uri}"
          + (f" registered={outcome.version}" if outcome.version else ""))
    if trails := outcome.tags.get(names.TRAILS_BASELINE):
        print(f"faceattr: the model trails the training-free landmark baseline on test ({trails}): "
              f"promotion's baseline rule will refuse it", file=sys.stderr)
    if outcome.not_registered:
        print(f"faceattr: {outcome.not_registered}", file=sys.stderr)
    if getattr(outcome, "outbox", None):   # training succeeded; tracking did not (faceattr/tracking/outbox.py)
        print(f"faceattr: tracking server unreachable; run kept in {outcome.outbox}; "
              f"upload with: faceattr sync {outcome.outbox}", file=sys.stderr)
    return 0


# --- the team tracking server and the outbox (faceattr/server.py, faceattr/tracking/outbox.py) ---
def add_server_parsers(sub) -> None:
    server = sub.add_parser("server", help="PostgreSQL + SeaweedFS S3 + mlflow server on this machine "
                                           "(docs/server.md)")
    server.add_argument("action", choices=("start", "stop", "status"))
    server.add_argument("--dir", required=True, help="where the data, pid files, logs and secrets live")
    server.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    for name in ("port", "postgres-port", "s3-port"):
        server.add_argument(f"--{name}", type=int, default=0,
                            help=("mlflow server port" if name == "port" else f"{name.split('-')[0]} port")
                            + " (default: a free one, kept for later starts)")
    server.set_defaults(func=cmd_server)
    sync = sub.add_parser("sync", help="upload a run kept in the local outbox (tracking failed) as a new run")
    sync.add_argument("outbox", help="the outbox folder `faceattr train` printed")
    sync.add_argument("--force", action="store_true", help="sync again although it was synced")
    sync.set_defaults(func=cmd_sync)


def cmd_server(args, extra) -> int:
    import json
    from pathlib import Path

    from faceattr.server import Server

    if extra:
        raise FaceattrError(f"unexpected arguments {extra}")
    server = Server(Path(args.dir).resolve(), host=args.host)
    if args.action == "start":
        status = server.start({"mlflow": args.port, "postgres": args.postgres_port, "s3": args.s3_port})
    elif args.action == "stop":
        status = server.stop()
    else:
        status = server.status()
    print(json.dumps(status, indent=1))
    if args.action == "start":
        print(f"faceattr: export MLFLOW_TRACKING_URI={server.tracking_uri()}")
    running = [s["running"] for s in status.values()]
    return 0 if (all(running) if args.action != "stop" else not any(running)) else 1


def cmd_sync(args, extra) -> int:
    if extra:
        raise FaceattrError(f"unexpected arguments {extra}")
    import_tensorflow()
    from faceattr.tracking.sync import sync

    result = sync(args.outbox, force=args.force)
    print(f"faceattr: synced {args.outbox} into run {result['run_id']} ({result['params']} params, "
          f"{result['metrics']} metric values, model={result['model_uri']}"
          + (f", registered={result['registered']}" if result["registered"] else "") + ")")
    return 0


def cmd_experiments(args, extra) -> int:
    from faceattr import models, tasks

    for name in config_module.available():
        cfg = config_module.load(name)
        target = cfg["target"]
        bounds = tasks.of(cfg).label_ranges()[target["column"]]   # None: not a number (gender, person)
        answers = target["column"] + (f" {bounds[0]:g}..{bounds[1]:g} {target['unit'] or ''}" if bounds else "")
        print(f"{name:12s} {cfg['task']:15s} answers={answers.strip():22s} region={cfg['region']:6s} "
              f"widths={models.widths(cfg)}" + (f"  ({target['reads']})" if target["reads"] else ""))
    return 0


# --- tune (faceattr/tuning.py) ---
def add_tune_parser(sub) -> None:
    tune = sub.add_parser("tune", help="hyperparameter search (keras-tuner), tracked in MLflow; resumable",
                          epilog=OVERRIDES_HELP)
    common_options(tune)
    tune.add_argument("--tuner", default="hyperband", help="hyperband (default), bayesian or random")
    tune.add_argument("--max-trials", dest="max_trials", type=int, default=10,
                      help="trials for random/bayesian (Hyperband's count follows --epochs and --factor)")
    tune.add_argument("--factor", type=int, default=3, help="Hyperband's reduction factor")
    tune.add_argument("--repeats", type=int, default=3, help="seeds the best configuration is retrained with")
    tune.add_argument("--fresh", nargs="?", const="true", default="false", metavar=SWITCH,
                      help="start over, discarding the project directory's earlier trials" + SWITCH_HELP)
    tune.add_argument("--directory", help="keras-tuner project directory (default tuner/EXPERIMENT)")
    tune.add_argument("--parent-run-id", dest="parent_run_id",
                      help="distributed workers: the chief's parent run (default: read from --directory)")
    tune.set_defaults(func=cmd_tune)


def cmd_tune(args, extra) -> int:
    fresh = str(args.fresh).strip().lower()
    if fresh not in ("true", "false", "1", "0", "yes", "no"):
        raise FaceattrError(f"--fresh takes true or false, got {args.fresh!r}")
    config = load_config(args, extra)
    import_tensorflow()
    from faceattr.tuning import tune

    out = tune(config, tuner=args.tuner, max_trials=args.max_trials, factor=args.factor,
               repeats=args.repeats, fresh=fresh in ("true", "1", "yes"), directory=args.directory,
               parent_run_id=args.parent_run_id)
    print(f"faceattr: tune done: {out}")
    return 0


# --- registry: promote, predict, pipeline (faceattr/promotion.py, serving/batch.py, workflow.py) ---
def add_registry_parsers(sub) -> None:
    promote = sub.add_parser("promote", help="judge a registered version against the champion; move "
                                             "@champion (and stage Production) if it wins (exit 3: refused)")
    promote.add_argument("model", help=f"registered model ({', '.join(config_module.policies())})")
    promote.add_argument("--version", default="", help="version to judge (default: the newest)")
    promote.add_argument("--dry-run", dest="dry_run", nargs="?", const="true", default="false", metavar=SWITCH,
                         help="decide and report, move nothing" + SWITCH_HELP)
    promote.add_argument("--rollback", nargs="?", const="true", default="false", metavar=SWITCH,
                         help="move @champion (and Production) back to the champion the current one replaced"
                              + SWITCH_HELP)
    promote.add_argument("--eval-data", dest="eval_data", default="",
                         help="evaluate on the test split of this manifest/folder instead of the challenger's data")
    promote.add_argument("--policy", default="", help="policy YAML (default registry/MODEL.yaml)")
    promote.add_argument("--rebundle", action="store_true",
                         help="when the champion moves, also make and judge a new version of every bundle holding "
                              "the model (`faceattr bundle`)")
    promote.add_argument("--eval-photos", dest="eval_photos", default="",
                         help="labelled WHOLE photos (manifest CSV / folder) the challenger is also judged on, "
                              "sent as kind=photo through the served model (default: the policy's photos.data)")
    promote.set_defaults(func=cmd_promote)

    predict = sub.add_parser("predict", help="score photos (a folder, a glob or a manifest) into CSV or Parquet, "
                                             "on this machine's cores or on Spark")
    predict.add_argument("source", help="folder of JPEG/PNG files, a quoted glob ('photos/**/*.jpg'), or a manifest "
                                        "(.csv/.parquet) with a `path` column; its other columns are kept")
    predict.add_argument("--model", required=True, help="model URI, e.g. models:/eyes@champion")
    predict.add_argument("--out", default="",
                         help="output .csv or .parquet (default preds.csv; preds.parquet with --engine spark)")
    predict.add_argument("--kind", default="crop", choices=("crop", "photo"),
                         help="the files are ready crops of the model's region (default) or whole photos")
    predict.add_argument("--engine", default="local", choices=("local", "spark"),
                         help="local: worker processes on this machine (default); spark: mlflow's spark_udf "
                              "(pip install -e '.[spark]' and Java 17; docs/spark.md)")
    predict.add_argument("--workers", type=int, default=0,
                         help="local engine: worker processes (default: one per core)")
    predict.add_argument("--master", default="",
                         help="spark engine: the cluster's master URL (default local[N], N the cores)")
    predict.add_argument("--batch-size", dest="batch_size", type=int, default=64,
                         help="photos per model call (a chunk of a worker; an Arrow batch on Spark)")
    predict.add_argument("--profile", action="store_true",
                         help="local engine: print where the time goes per photo (decode, detect, cut, ...)")
    predict.set_defaults(func=cmd_predict)

    bundle = sub.add_parser("bundle", help="register a bundle: one served model answering every attribute of every "
                                           "face, from the current champions of MODELs")
    bundle.add_argument("name", help="the bundle's registered model (its policy: registry/NAME.yaml)")
    bundle.add_argument("models", nargs="*", help="the members (default: the members of its newest version, "
                                                  "at their current champions)")
    bundle.set_defaults(func=cmd_bundle)

    pipeline = sub.add_parser("pipeline", help="train + promote gender, then background, eyes, mouth")
    pipeline.add_argument("--epochs", default="", help="most epochs for every model (default: each experiment's)")
    pipeline.add_argument("--data", default="synthetic", help="'synthetic' (default) or a manifest CSV / folder")
    pipeline.add_argument("--data-size", dest="data_size", default="", help="synthetic photos per model")
    pipeline.add_argument("--models", default="gender,background,eyes,mouth",
                          help="experiments to train and promote, in order (gender first: the regressions read "
                               "its champion)")
    pipeline.set_defaults(func=cmd_pipeline)


def _flag(value, name: str) -> bool:
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no", ""):
        raise FaceattrError(f"{name} takes true or false, got {value!r}")
    return text in ("true", "1", "yes")


def cmd_promote(args, extra) -> int:
    if extra:
        raise FaceattrError(f"unexpected arguments {extra}")
    rollback, dry_run = _flag(args.rollback, "--rollback"), _flag(args.dry_run, "--dry-run")
    policy = None if rollback else config_module.Policy.load(args.model, args.policy or None)
    import_tensorflow()
    from faceattr import bundling
    from faceattr import promotion as promote

    if isinstance(policy, config_module.BundlePolicy):
        outcome = bundling.promote(args.model, args.version or None, policy, dry_run=dry_run)
        print(f"faceattr: {args.model}: {bundling.summary(outcome)}")
        print(f"faceattr: result {bundling.dumps(outcome)}")
        return 0 if not outcome["reasons"] else promote.REFUSED
    if rollback:
        result = promote.rollback(args.model)
    else:
        result = promote.promote(args.model, args.version or None, dry_run=dry_run,
                                 eval_data=args.eval_data or None, policy=policy,
                                 eval_photos=args.eval_photos or None)
    print(f"faceattr: {args.model}: {result.summary()}")
    print(f"faceattr: result {promote.dumps(result)}")
    for name in bundling.behind(args.model):   # bundles pin their members' versions: say which fell behind
        if not args.rebundle:
            print(f"faceattr: bundle {name!r} holds an older {args.model}; `faceattr promote {args.model} --rebundle` "
                  f"or `faceattr bundle {name}` makes a new version")
            continue
        made = bundling.make(name, [])
        outcome = bundling.promote(name, made.version, config_module.Policy.load(name), dry_run=dry_run)
        print(f"faceattr: {name}: new version {made.version}: {bundling.summary(outcome)}")
    return result.exit_code


def cmd_bundle(args, extra) -> int:
    if extra:
        raise FaceattrError(f"unexpected arguments {extra}")
    import_tensorflow()
    from faceattr import bundling

    made = bundling.make(args.name, args.models)
    pins = bundling.pinned(made)
    print(f"faceattr: registered {args.name} version {made.version}: "
          + ", ".join(f"{m} v{v}" for m, v in pins.items()) + f"; judge it with `faceattr promote {args.name}`")
    return 0


def cmd_predict(args, extra) -> int:
    if extra:
        raise FaceattrError(f"unexpected arguments {extra}")
    if args.batch_size < 1 or args.workers < 0:
        raise FaceattrError("--batch-size must be >= 1 and --workers >= 0")
    import_tensorflow()
    if args.engine == "spark":
        from faceattr.serving.spark import predict as predict_on_spark

        out = args.out or "preds.parquet"
        result = predict_on_spark(args.source, args.model, out, kind=args.kind, master=args.master or None,
                                  batch_size=args.batch_size)
        print(f"faceattr: scored {result.scored} of {result.rows} photos into {out} on {result.master}"
              + (f"; {result.rows - result.scored} could not be answered (see its `error` column)"
                 if result.rows > result.scored else "")
              + f"; the model was loaded {result.loads} time(s) ({result.seconds:.1f} s)")
        return 0
    from faceattr.serving.batch import predict, profile_lines

    out = args.out or "preds.csv"
    result, profile = predict(args.source, args.model, out, kind=args.kind, batch_size=args.batch_size,
                              workers=args.workers or None)
    bad = int(result["error"].notna().sum())
    print(f"faceattr: scored {len(result) - bad} of {len(result)} photos into {out}"
          + (f"; {bad} could not be answered (see its `error` column)" if bad else ""))
    if args.profile:
        print("faceattr: time per photo (summed over the workers):\n" + "\n".join(profile_lines(profile, len(result))))
    return 0


def cmd_pipeline(args, extra) -> int:
    import_tensorflow()
    from faceattr.workflow import run_pipeline

    return run_pipeline(args.models.split(","), epochs=args.epochs, data=args.data, data_size=args.data_size,
                        extra=extra)


# --- prepare, evaluate: real photos (faceattr/data/prepare.py, faceattr/real_eval.py) ---
def add_data_parsers(sub) -> None:
    prep = sub.add_parser("prepare", help="detect faces (MTCNN) in photos, write every model's crops + manifests")
    prep.add_argument("photos", help="a labels CSV, a folder with labels.csv, or a folder of photos")
    prep.add_argument("--out", required=True, help="the data set folder to write (DATASET_DIR)")
    prep.add_argument("--image-region", dest="image_region", default=None,
                      help=f"the photos are already crops of this region ({', '.join(config_module.REGIONS)}): "
                           f"no detection")
    prep.add_argument("--max-failure-share", dest="max_failure_share", type=float, default=0.1,
                      help="exit 3 when at least this share of the photos fails (default 0.1)")
    prep.add_argument("--workers", type=int, default=1, help="processes (default 1: batched detection is faster)")
    prep.add_argument("--cache-dir", dest="cache_dir", help="detection cache (default $FACEATTR_CACHE/detections)")
    prep.add_argument("--experiment", default="",
                      help="also log the preparation (counts, report.json, failures.csv) as a run of this MLflow "
                           "experiment (default: none; the data set folder holds the same files, and each "
                           "training run logs the data set it read, with its digest, as its MLflow input)")
    prep.set_defaults(func=cmd_prepare)
    ev = sub.add_parser("evaluate", help="train + evaluate on the real sets in ../shared/data (held-out split)")
    ev.add_argument("--sets", default="eye-state,yawn-mouth,utkface-gender", help="comma-separated data sets")
    ev.add_argument("--data-root", dest="data_root", help="folder holding the sets (default ../shared/data)")
    ev.add_argument("--split", default="content,phash", help="split kinds: content, phash or both")
    ev.add_argument("--epochs", type=int, default=40)
    ev.set_defaults(func=cmd_evaluate)


def cmd_prepare(args, extra) -> int:
    if extra:
        raise FaceattrError(f"unexpected arguments: {' '.join(extra)}")
    import_tensorflow()
    from faceattr import tracking
    from faceattr.data.prepare import EXIT_TOO_MANY_FAILURES, prepare

    def run_prepare():
        return prepare(args.photos, args.out, image_region=args.image_region or None, cache_dir=args.cache_dir,
                       max_failure_share=args.max_failure_share, workers=args.workers)

    if args.experiment:   # asked for: a run in the user's store only then (FAILED when prepare fails)
        tracking.use_experiment(args.experiment)
        with tracking.start_run(f"prepare-{args.out.rstrip('/').split('/')[-1]}") as run:
            report = run_prepare()
            log_prepare(run, report, args)
    else:
        report = run_prepare()
    print(f"faceattr: prepare: {report.counts()} failure share {report.failure_share:.3f} "
          f"in {report.seconds:.1f}s; report in {report.out}/report.json, failures in {report.out}/failures.csv")
    if report.failure_share >= args.max_failure_share and report.failures:
        print(f"faceattr: error: {report.failure_share:.1%} of the photos failed "
              f"(--max-failure-share {args.max_failure_share})", file=sys.stderr)
        return EXIT_TOO_MANY_FAILURES
    return 0


def log_prepare(run, report, args) -> None:
    """The prepare run's params, counts and report files (`run`: a tracking.Run; `report`: prepare's Report)."""
    from pathlib import Path

    from faceattr.data import faces

    out = Path(report.out)
    run.log_params({"source": str(args.photos), "out": str(out), "image_region": str(args.image_region or None),
                    "max_failure_share": args.max_failure_share, "workers": args.workers, "detector": faces.DETECTOR})
    counts = report.counts()
    run.log_metrics({**{f"photos_{k}": v for k, v in counts.items()}, "failure_share": report.failure_share,
                     "seconds": report.seconds,
                     "photos_per_second": report.total / report.seconds if report.seconds else 0.0})
    for name in ("report.json", "failures.csv"):
        run.log_artifact(out / name, artifact_path="prepare")


def cmd_evaluate(args, extra) -> int:
    overrides = parse_overrides(extra)
    import_tensorflow()
    from faceattr.real_eval import evaluate_sets

    evaluate_sets(args.sets.split(","), splits=args.split.split(","), epochs=args.epochs,
                  data_root=args.data_root, overrides=overrides)
    return 0


# --- report (faceattr/report.py) ---
def add_report_parser(sub) -> None:
    report = sub.add_parser("report", help="one self-contained HTML page comparing an experiment's runs "
                                           "(mean ± std over seeds, curves, champion vs challenger, promotions)")
    report.add_argument("experiment", help="MLflow experiment name (eyes, gender, ...)")
    report.add_argument("--out", default=names.REPORT_FILE, help=f"the HTML file to write (default {names.REPORT_FILE})")
    report.set_defaults(func=cmd_report)


def cmd_report(args, extra) -> int:
    if extra:
        raise FaceattrError(f"unexpected arguments {extra}")
    import_tensorflow()
    from faceattr.report import write_report

    out, run_id = write_report(args.experiment, args.out)
    print(f"faceattr: report of {args.experiment!r} in {out}; logged as report.html of run {run_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = Parser(prog="faceattr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one experiment, tracked in MLflow", epilog=OVERRIDES_HELP)
    common_options(train)
    train.add_argument("--register", action=argparse.BooleanOptionalAction, default=True,
                       help="register the model as a new version of the registered model named after "
                            "the experiment (default; --no-register to skip)")
    train.add_argument("--register-few-photos", dest="register_few_photos", action="store_true",
                       help="register it even when it trained on fewer photos than the experiment's "
                            "data.min_photos (by default such a model is logged, not registered)")
    train.set_defaults(func=cmd_train)
    sub.add_parser("experiments", help="list the experiments of experiments/: what each answers, its region and "
                                       "widths").set_defaults(func=cmd_experiments)
    add_tune_parser(sub)
    add_registry_parsers(sub)
    add_data_parsers(sub)
    add_server_parsers(sub)
    add_report_parser(sub)
    args, extra = parser.parse_known_args(argv)
    try:
        return args.func(args, extra)
    except FaceattrError as exc:
        print(f"faceattr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # Ctrl-C: a sentence, not a traceback; a run it stopped ends KILLED
        print("faceattr: interrupted; a run it was logging is marked KILLED and keeps what it logged",
              file=sys.stderr)
        return 130


def run() -> None:
    """The `faceattr` command (and `python -m faceattr`): `main`, then the process ends at once with its
    exit status, after what Python does at exit that anyone can see: other threads finished, the exit
    handlers run (MLflow ends an open run and its async logging, temporary folders are removed, logging
    is flushed), stdout and stderr flushed. What is skipped is tearing down every module's objects, which
    for TensorFlow, Keras and MLflow took ~1.1 s of a 23 s training run and of every command (issue 30: a
    run's own cost). Tests call `main`, which leaves the interpreter alone."""
    code = main() or 0
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)   # a thread still working: Python's own exit waits for it
    atexit._run_exitfuncs()   # noqa: SLF001 (what interpreter exit would call; there is no public name)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
