"""Every name faceattr writes into MLflow and reads back: tags, params and artifacts, defined once.

A writer and its readers (report, promotion, tuning, sync, the served model) meet here, so a renamed
tag cannot leave a reader behind. MLflow's own tags (the run name, the parent run) are MLflow's
constants (`mlflow.utils.mlflow_tags`), used by the doors that import mlflow (tracking, registry);
this module imports nothing, so config and data may read it too.
"""

PREFIX = "faceattr."          # faceattr's own tags; a workflow step's summary is PREFIX + model name

# --- the logged model's artifacts -------------------------------------------------------------------
RECORD = "record.json"        # the model's record (faceattr/record.py), beside its Keras files
SPEC = "spec.json"            # the record's name in models logged before record.json (read by record.read)
MODEL = "model.keras"         # the Keras model
GENDER_MODEL = "gender_model.keras"   # the bundled gender model of a regression, when it read one
INPUT_EXAMPLE = "input_example.json"  # an outbox's kept model: the input example `faceattr sync` logs with it
CONFIG = "config.json"        # the run's validated experiment config

# --- what a training run logs -----------------------------------------------------------------------
COLLAPSE_CHECK = "collapse_check.json"
COLLAPSED = "collapsed"       # tag and metric key: the collapse check's verdict
LEANS_ON_GENDER = "leans_on_gender"   # tag, beside `collapsed` (regressions)
TRAILS_BASELINE = "trails_landmark_baseline"   # tag: where the model is below the landmark baseline on test
SLICES = "slices.json"        # MLflow's table format: {"columns": [...], "data": [[...], ...]}
LEARNING_CURVES = "plots/learning_curves.png"
PREDICTED_VS_TRUE = "plots/predicted_vs_true.png"
GALLERY = "plots/error_gallery.png"
CROP_CHECK = "plots/crop_check.png"   # training crops beside the served cut of the same photos
GENDER_SOURCE = "gender_source"       # param: where a regression's gender input came from (gender_input.py)

# --- run tags ---------------------------------------------------------------------------------------
EXPERIMENT = "faceattr.experiment"    # the experiment config's name
DATA = "faceattr.data"                # the data set's name
SEED = "faceattr.seed"
WIDTHS = "faceattr.widths"            # the architecture in one short string (models.widths)
SPLIT = "faceattr.split"              # real_eval: the split judged
ERROR = "faceattr.error"              # a failed trial's error
FAILED_STEP = "faceattr.failed_step"  # the workflow's step that failed
LAUNCHED_BY = "faceattr.launched_by_run"   # an audit run started inside another run
SYNCED_FROM = "faceattr.synced_from"  # a run replayed from an outbox: the outbox's folder

# What a run is, on every run that is not a plain training run. One tag name, so a reader can tell
# them apart without knowing who wrote them.
ROLE = "faceattr.role"
SEARCH, TRIAL, REPEAT, REPORT = "search", "trial", "repeat", "report"   # its values (tuning, report)

# tuning
SEARCH_ID, TRIAL_ID, TUNING_DIR = "faceattr.search_id", "faceattr.trial_id", "faceattr.tuning_dir"
TUNER_ID = "faceattr.tuner_id"
RESUMED_FROM = "faceattr.resumed_from"
REGISTERED_VERSION, MEDIAN_RUN = "faceattr.registered_version", "faceattr.median_run_id"

REPORT_FILE = "report.html"           # the report run's artifact
REPORTS = "faceattr-reports"          # the MLflow experiment report runs are logged in, apart from training runs
REPORTED = "faceattr.reported"        # a report run's tag: the experiment it compares
NOT_REGISTERED = "faceattr.not_registered"   # a training run's tag: why its model was not registered

# --- promotion: audit runs and the tags on a version -------------------------------------------------
PROMOTION = "promotion.json"          # an audit run's record
ACTION, MODEL_NAME, USER = "faceattr.action", "faceattr.model", "faceattr.user"
DECISION, REASONS, EVIDENCE = "faceattr.decision", "faceattr.reasons", "faceattr.evidence"
DECIDED_AT, DECIDED_BY = "faceattr.decided_at", "faceattr.decided_by"
PROMOTE_RUN = "faceattr.promote_run_id"
EVAL_DATA = "faceattr.eval_data"
BEAT_CHAMPION = "faceattr.beat_champion"
PREVIOUS = "faceattr.previous_champion"   # on a version: the champion it replaced
ROLLED_BACK, RESTORED = "faceattr.rolled_back", "faceattr.restored"
REPAIRED = "faceattr.repaired"
# a bundle's version (faceattr/bundling.py): its members in answer order, and each member's pinned version
BUNDLE_MEMBERS, BUNDLE_MEMBER = "faceattr.bundle.members", "faceattr.member."
