"""`faceattr report EXPERIMENT`: one self-contained HTML page comparing the runs of an MLflow experiment.

MLflow's own UI compares runs one metric at a time and has no mean +- std over seeds (mlflow#3762).
The page shows: configurations (runs whose params differ only in the seed) with the mean +- std of
the task's headline metrics; tuning searches summarised, one row per search instead of one per trial;
every run's learning curves overlaid; the registered champion and challenger side by side with the
plots and slices their runs logged; the promotion history. Plots are inline PNG data URIs and the
styles are inline, so the file opens offline and in MLflow's artifact viewer, where it is logged as
`report.html` of a run in the experiment `faceattr-reports` (names.REPORTS), not in the experiment it
compares: MLflow has no hidden runs, so a report run among the training runs would sit in their list,
their compare view and their charts; in its own experiment every report is one click away.

Only FINISHED training runs are judged (a failed run has no metrics and often no params); the page
says how many runs it left out and why. Runs are grouped by the experiment's own config: the same
model launched by `mlflow run` and by `faceattr train` is one configuration, although MLflow's
launcher logs its `-P` values (epochs, seed, ...) as params of their own.

All MLflow reads go through faceattr.tracking and faceattr.registry; this module only arranges them.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import numpy as np

from faceattr import config as config_module
from faceattr import evaluate, names, registry, tasks, tracking
from faceattr import promotion
from faceattr.errors import ConfigError, FaceattrError

SEED_PARAMS = ("train.seed", "seed")   # `seed`: the -P shortcut `mlflow run` logs beside train.seed
CURVES = ("loss", "val_loss")          # per-epoch metrics (tracking.EpochMetrics)
# What the training runs log besides the task's metrics (faceattr/views.py: how far a regression's answers
# move when the gender input is swapped or unknown, or the photo shuffled) and the contenders' plots.
RELIANCE = evaluate.GENDER_WEIGHTS
CONTENDER_PLOTS = {names.GALLERY: "gallery", names.PREDICTED_VS_TRUE: "predicted vs true"}


# --- the numbers ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stat:
    """A metric over the runs of one configuration: mean and sample standard deviation (ddof=1, as
    tuning's repeat_*_std); std is None for a single run."""
    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Stat | None":
        values = [v for v in values if v is not None and not math.isnan(v)]
        if not values:
            return None
        std = float(np.std(values, ddof=1)) if len(values) > 1 else None
        return cls(float(np.mean(values)), std, len(values))


@dataclass
class Group:
    """Runs whose experiment config is the same but for the seed: one configuration, several seeds."""
    number: int
    params: dict[str, str]
    runs: list
    label: list[str] = field(default_factory=list)   # the params that tell it from the other configurations

    @property
    def seeds(self) -> list[str]:
        found = {seed_of(run) for run in self.runs}
        return sorted(found, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))

    def stat(self, key: str) -> Stat | None:
        """Over distinct seeds: the runs of one seed are averaged first, so two runs of seed 0 are one
        value (n=1, no ±), not evidence that the model is stable across seeds."""
        by_seed: dict[str, list[float]] = {}
        for run in self.runs:
            value = run.data.metrics.get(key)
            if value is not None and not math.isnan(value):
                by_seed.setdefault(seed_of(run), []).append(value)
        return Stat.of([float(np.mean(values)) for values in by_seed.values()])


def seed_of(run) -> str:
    return next((run.data.params[k] for k in SEED_PARAMS if k in run.data.params), "-")


@dataclass
class Search:
    """A tuning search (or any parent run): its nested runs summarised in one row."""
    run: object
    children: list
    best: dict[str, float]             # the search's own best_<metric>


@dataclass
class Contender:
    """The champion or the challenger: its registered version, the run that made it, what that run logged."""
    role: str
    version: object
    run: object | None
    facts: dict[str, str]
    plots: dict[str, str | None]        # caption -> data URI, None: not logged
    slices: dict | None


@dataclass
class Evidence:
    experiment: str
    model: str
    compared: list[str]
    groups: list[Group]
    searches: list[Search]
    curves: str | None
    contenders: list[Contender]
    model_note: str
    decisions: list[dict]
    left_out: Counter                  # why -> how many runs
    made_at: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def compared_metrics(runs: list) -> list[str]:
    """The task's headline metrics and accuracy, their test-split twins, then the reliance metrics:
    those that some run logged. Runs without a faceattr task: the metrics every run has."""
    logged = set().union(*(run.data.metrics for run in runs))
    task_name = Counter(run.data.params.get("task") for run in runs).most_common(1)[0][0]
    task = tasks.TASKS.get(task_name)
    if task is not None:   # the task for the target its runs declared (age: val_mae, in years)
        try:
            task = tasks.of(tracking.run_config(next(r for r in runs if r.data.params.get("task") == task_name)))
        except FaceattrError:
            pass           # a run whose config cannot be read: the task's own headline
    if task is None:
        common = set.intersection(*(set(run.data.metrics) for run in runs))
        return sorted(k for k in common if k not in CURVES)
    wanted = [*task.headline, f"val_{task.accuracy_key}"]
    wanted += [f"test_{k[4:]}" for k in wanted if k.startswith("val_")]
    wanted += RELIANCE
    return [k for k in dict.fromkeys(wanted) if k in logged]


def group_runs(runs: list, left_out: Counter) -> list[Group]:
    """Configurations, in the order of their first run; each labelled by the config keys that differ
    between them. A run whose config cannot be read is counted in `left_out`, not guessed at."""
    by_params: dict[tuple, list] = {}
    for run in runs:
        try:
            config = config_module.flatten(tracking.run_config(run))   # the experiment's own config
        except ConfigError:
            left_out["finished run(s) whose experiment config cannot be read"] += 1
            continue
        key = tuple(sorted((k, str(v)) for k, v in config.items() if k not in SEED_PARAMS))
        by_params.setdefault(key, []).append(run)
    groups = [Group(i + 1, dict(key), members) for i, (key, members) in enumerate(by_params.items())]
    keys = set().union(*(g.params for g in groups))
    differing = sorted(k for k in keys if len({g.params.get(k) for g in groups}) > 1)
    for g in groups:
        g.label = [f"{k}={g.params.get(k, '(unset)')}" for k in differing] or ["the only configuration"]
    return groups


def sort_runs(runs: list) -> tuple[list, list[Search], Counter]:
    """(FINISHED training runs, searches, {why: how many runs were left out}). A nested run is summarised
    under its parent (tuning trials would flood the table) unless it is a seed repeat, which is compared
    like any run; its parent is a search, not a configuration. A training run that did not finish
    (FAILED, KILLED, RUNNING) has no metrics to judge, often no params: it is counted, not compared."""
    left_out: Counter = Counter()
    reports = [r for r in runs if r.data.tags.get(names.ROLE) == names.REPORT]
    if reports:
        left_out["report run(s) among the training runs"] = len(reports)
    runs = [r for r in runs if r not in reports]
    children: dict[str, list] = {}
    for run in runs:
        parent = run.data.tags.get(tracking.PARENT)
        if parent and run.data.tags.get(names.ROLE) != names.REPEAT:
            children.setdefault(parent, []).append(run)
    parents = {r.info.run_id for r in runs if r.data.tags.get(names.ROLE) == names.SEARCH} | set(children)
    nested = {r.info.run_id for kids in children.values() for r in kids}
    training = [r for r in runs if r.info.run_id not in parents | nested]
    for run in training:
        if run.info.status != "FINISHED":
            left_out[f"{run.info.status} training run(s), not finished"] += 1
    training = [r for r in training if r.info.status == "FINISHED"]
    searches = [Search(r, children.get(r.info.run_id, []),
                       {k[5:]: v for k, v in r.data.metrics.items() if k.startswith("best_")})
                for r in runs if r.info.run_id in parents]
    return training, searches, left_out


# --- pictures -------------------------------------------------------------------------------------

def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def loss_limits(values_by_step: list[tuple[int, float]]) -> tuple[float, float] | None:
    """The loss axis's limits: from epoch 1 on (epoch 0's loss is often ten times the rest and would press
    every configuration into one line at the bottom), padded by 5%; None when there is no later epoch."""
    later = [v for step, v in values_by_step if step >= 1 and math.isfinite(v)]
    if not later:
        return None
    low, high = min(later), max(later)
    pad = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
    return low - pad, high + pad


def learning_curves(groups: list[Group]) -> str | None:
    """Every run's per-epoch training and validation loss, one colour per configuration, as a data URI;
    the loss axis is fitted to epochs 1 on (`loss_limits`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    histories = {run.info.run_id: {key: tracking.metric_history(run.info.run_id, key) for key in CURVES}
                 for g in groups for run in g.runs}
    if not any(points for h in histories.values() for points in h.values()):
        return None
    fig, axes = plt.subplots(1, len(CURVES), figsize=(12, 4), sharey=True)
    colours = plt.get_cmap("tab10")
    for ax, key in zip(axes, CURVES):
        for g in groups:
            for i, run in enumerate(g.runs):
                points = histories[run.info.run_id][key]
                if points:
                    steps, values = zip(*points)
                    ax.plot(steps, values, color=colours((g.number - 1) % 10), alpha=0.8, lw=1.4,
                            label=f"C{g.number}" if i == 0 else None)
        ax.set(title=key, xlabel="epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    limits = loss_limits([p for h in histories.values() for points in h.values() for p in points])
    if limits:
        axes[0].set_ylim(*limits)   # shared y: both panels
    axes[0].set_ylabel("loss (y axis fitted to epochs 1 on)")
    axes[-1].legend(title="configuration", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return data_uri(buffer.getvalue())


# --- gathering --------------------------------------------------------------------------------------

def contenders(model: str, runs_by_id: dict, compared: list[str]) -> tuple[list[Contender], str]:
    """The champion and the challenger (the newest version that is not the champion), and a note when
    either is missing."""
    try:
        every = registry.versions(model)
    except registry.RegistryError:
        return [], f"no registered model {model!r}: `faceattr train` registers a version of it"
    champion = registry.champion(model)
    others = [v for v in every if champion is None or str(v.version) != str(champion.version)]
    picked = [("champion", champion), ("challenger", others[-1] if others else None)]
    found = [contender(role, v, runs_by_id, compared) for role, v in picked if v is not None]
    missing = [role for role, v in picked if v is None]
    return found, (f"no {' and no '.join(missing)} yet" if missing else "")


def contender(role: str, version, runs_by_id: dict, compared: list[str]) -> Contender:
    run = runs_by_id.get(version.run_id) or (tracking.get_run(version.run_id) if version.run_id else None)
    facts = {"version": str(version.version), "stage": version.current_stage,
             "aliases": ", ".join(version.aliases) or "-", "decision": version.tags.get(names.DECISION, "-")}
    if run is None:
        return Contender(role, version, None, facts, {}, None)
    run_id, metrics = run.info.run_id, run.data.metrics
    facts.update({"run": run.data.tags.get(tracking.RUN_NAME, run_id), "seed": seed_of(run),
                  names.LEANS_ON_GENDER: run.data.tags.get(names.LEANS_ON_GENDER, "-")})
    slice_keys = sorted(k for k in metrics if evaluate.SLICE_MARK in k)
    facts.update({k: _number(metrics[k]) for k in [*compared, *slice_keys] if k in metrics})
    plots = {caption: tracking.read_artifact(run_id, path) for path, caption in CONTENDER_PLOTS.items()}
    table = tracking.read_artifact(run_id, names.SLICES)
    return Contender(role, version, run, facts, {c: data_uri(png) if png else None for c, png in plots.items()},
                     _table(table) if table else None)


def _table(raw: bytes) -> dict:
    table = json.loads(raw)
    return {"columns": [str(c) for c in table.get("columns", [])], "data": table.get("data", [])}


def decisions(model: str) -> list[dict]:
    """The promotion history, newest first: one row per audit run (faceattr/promotion.py)."""
    rows = []
    for run in reversed(promotion.history(model)):
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        metric = params.get("policy.metric")
        rows.append({
            "when": datetime.fromtimestamp(run.info.start_time / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            "action": tags.get(names.ACTION, "-"), "decision": tags.get(names.DECISION, run.info.status),
            "version": params.get("challenger_version", params.get("to_version", "-")),
            "champion": params.get("champion_version", params.get("from_version", "-")),
            "metric": metric or "-",
            "challenger_value": metrics.get(f"challenger_{metric}"), "champion_value": metrics.get(f"champion_{metric}"),
            "reasons": tags.get(names.REASONS, "-"), "user": tags.get(names.USER, "-"),
            "run": tags.get(tracking.RUN_NAME, run.info.run_id)})
    return rows


def collect_evidence(experiment: str) -> Evidence:
    """Everything the page shows, read from the tracking store and the registry."""
    experiment_id = tracking.find_experiment(experiment)
    if experiment_id is None:
        raise FaceattrError(f"no MLflow experiment named {experiment!r}; there are: "
                            f"{', '.join(tracking.experiment_names()) or 'none'} (MLFLOW_TRACKING_URI chooses the store)")
    runs = tracking.find_runs(experiment_id, "")
    training, searches, left_out = sort_runs(runs)
    if not training and not searches:
        skipped = "".join(f"; left out: {n} {why}" for why, n in left_out.items())
        raise FaceattrError(f"experiment {experiment!r} has no finished runs to compare{skipped}: train some "
                            f"first (`faceattr train {experiment} --seed 0`, `--seed 1`, ...)")
    compared = compared_metrics(training or [c for s in searches for c in s.children] or [s.run for s in searches])
    groups = group_runs(training, left_out) if training else []
    # The registered model is named after the faceattr experiment the runs ran (experiment.py), which
    # `mlflow run --experiment-name` may have logged under another MLflow experiment name.
    named = Counter(r.data.tags.get(names.EXPERIMENT) for r in runs if r.data.tags.get(names.EXPERIMENT))
    model = named.most_common(1)[0][0] if named else experiment
    found, note = contenders(model, {r.info.run_id: r for r in runs}, compared)
    return Evidence(experiment, model, compared, groups, searches, learning_curves(groups), found, note,
                    decisions(model), left_out)


# --- the page -------------------------------------------------------------------------------------

def _number(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def _stat(stat: Stat | None) -> str:
    if stat is None:
        return "-"
    # two significant digits of spread are all a handful of seeds can tell
    return _number(stat.mean) + ("" if stat.std is None else f" ± {stat.std:.2g}")


def _colour(number: int) -> str:
    import matplotlib

    return matplotlib.colors.to_hex(matplotlib.colormaps["tab10"]((number - 1) % 10))


PAGE = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
PAGE.filters.update(number=_number, stat=_stat, colour=_colour)
TEMPLATE = PAGE.from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>faceattr report: {{ e.experiment }}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px 32px; color: #1d2330; max-width: 1320px; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ccd; }
.note { color: #5a6270; } table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #d5d9e0; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 6px; }
.side { display: flex; gap: 24px; align-items: flex-start; } .side > section { flex: 1; min-width: 0; }
/* every table sits in a .wide box: a table wider than its box scrolls inside it, the page never does */
.wide { overflow-x: auto; max-width: 100%; } img { max-width: 100%; border: 1px solid #e3e6ea; }
details { margin: 4px 0; } code { font-size: 0.9em; overflow-wrap: anywhere; }
/* the contenders' plots take the full width below their facts, two columns only from 1800 px on, so a
   gallery's captions stay readable at a laptop's 1400 px */
.side { flex-direction: column; align-items: stretch; }
@media (min-width: 1800px) { .side { flex-direction: row; align-items: flex-start; } }
</style></head><body>
<h1>faceattr report: experiment <code>{{ e.experiment }}</code></h1>
<p class="note">Made {{ e.made_at }}. {{ e.groups | map(attribute='runs') | map('length') | sum }} training runs in
{{ e.groups | length }} configuration(s){% if e.searches %}, {{ e.searches | length }} tuning search(es){% endif %}.
{% if e.left_out %}Left out: {% for why, n in e.left_out.items() %}{{ n }} {{ why }}{{ "; " if not loop.last }}{% endfor %}.{% endif %}</p>

<h2 id="configurations">Configurations: mean ± std over seeds</h2>
<p class="note">Runs whose experiment config differs only in the seed form one configuration (MLflow's
launcher params and what a run computed do not count). Runs of the same seed are averaged first; ± is the
sample standard deviation (n-1) over distinct seeds; a single seed has none.</p>
<div class="wide"><table class="configurations">
<tr><th>configuration</th><th>runs</th><th>seeds</th>{% for k in e.compared %}<th>{{ k }}</th>{% endfor %}</tr>
{% for g in e.groups %}
<tr id="C{{ g.number }}"><td><span class="swatch" style="background: {{ g.number | colour }}"></span>C{{ g.number }}{% for p in g.label %}<br>{{ p }}{% endfor %}</td>
<td class="num">{{ g.runs | length }}</td><td>{{ g.seeds | length }} distinct: {{ g.seeds | join(', ') }}</td>
{% for k in e.compared %}{% set s = g.stat(k) %}<td class="num" data-metric="{{ k }}"{% if s %} title="mean {{ s.mean }}, std {{ s.std }}, n={{ s.n }}"{% endif %}>{{ s | stat }}</td>{% endfor %}</tr>
{% endfor %}
</table></div>
{% for g in e.groups %}
<details><summary>C{{ g.number }}: params and runs</summary>
<p>{% for run in g.runs %}<code>{{ run.data.tags.get(run_name, run.info.run_id) }}</code> {% endfor %}</p>
<div class="wide"><table>{% for k, v in g.params | dictsort %}<tr><td><code>{{ k }}</code></td><td>{{ v }}</td></tr>{% endfor %}</table></div>
</details>
{% endfor %}

{% if e.searches %}
<h2 id="searches">Tuning searches</h2>
<p class="note">Each search's trials are nested runs, summarised here; its seed repeats are compared above.</p>
<div class="wide"><table class="searches"><tr><th>search run</th><th>status</th><th>nested runs</th><th>finished</th>
{% for k in e.compared %}<th>best {{ k }}</th>{% endfor %}</tr>
{% for s in e.searches %}
<tr><td>{{ s.run.data.tags.get(run_name, s.run.info.run_id) }}</td><td>{{ s.run.info.status }}</td>
<td class="num">{{ s.children | length }}</td>
<td class="num">{{ s.children | selectattr('info.status', 'equalto', 'FINISHED') | list | length }}</td>
{% for k in e.compared %}<td class="num">{{ s.best.get(k) | number }}</td>{% endfor %}</tr>
{% endfor %}
</table></div>
{% endif %}

<h2 id="curves">Learning curves</h2>
{% if e.curves %}<img class="curves" alt="learning curves" src="{{ e.curves }}">
{% else %}<p class="note">No per-epoch loss logged.</p>{% endif %}

<h2 id="contenders">Champion and challenger of registered model <code>{{ e.model }}</code></h2>
{% if e.model_note %}<p class="note">{{ e.model_note }}</p>{% endif %}
<div class="side">
{% for c in e.contenders %}
<section class="contender {{ c.role }}"><h3>{{ c.role }}: version {{ c.version.version }}</h3>
<div class="wide"><table>{% for k, v in c.facts.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table></div>
{% for caption, uri in c.plots.items() %}
<h4>{{ caption }}</h4>
{% if uri %}<img alt="{{ c.role }} {{ caption }}" src="{{ uri }}">{% else %}<p class="note">no {{ caption }} logged</p>{% endif %}
{% endfor %}
<h4>slices</h4>
{% if c.slices %}<div class="wide"><table class="slices"><tr>{% for col in c.slices.columns %}<th>{{ col }}</th>{% endfor %}</tr>
{% for row in c.slices.data %}<tr>{% for cell in row %}<td{% if cell is number %} class="num"{% endif %}>{{ cell | number if cell is number and cell is not boolean else cell }}</td>{% endfor %}</tr>{% endfor %}
</table></div>{% else %}<p class="note">no slices logged</p>{% endif %}
</section>
{% endfor %}
</div>

<h2 id="promotions">Promotion history</h2>
{% if e.decisions %}
<div class="wide"><table class="promotions"><tr><th>when (UTC)</th><th>action</th><th>decision</th><th>version</th><th>champion then</th>
<th>metric</th><th>version's</th><th>champion's</th><th>reasons</th><th>by</th><th>run</th></tr>
{% for d in e.decisions %}
<tr><td>{{ d.when }}</td><td>{{ d.action }}</td><td>{{ d.decision }}</td><td>{{ d.version }}</td><td>{{ d.champion }}</td>
<td>{{ d.metric }}</td><td class="num">{{ d.challenger_value | number }}</td><td class="num">{{ d.champion_value | number }}</td>
<td>{{ d.reasons }}</td><td>{{ d.user }}</td><td>{{ d.run }}</td></tr>
{% endfor %}
</table></div>
{% else %}<p class="note">No promotion of <code>{{ e.model }}</code> yet (`faceattr promote {{ e.model }}`).</p>{% endif %}
</body></html>
""")


def render(evidence: Evidence) -> str:
    return TEMPLATE.render(e=evidence, run_name=tracking.RUN_NAME)


def write_report(experiment: str, out: str | Path = names.REPORT_FILE) -> tuple[Path, str]:
    """Write the page for `experiment` to `out` and log it as `report.html` of a new run `report-EXPERIMENT`
    in the experiment names.REPORTS (see the module docstring); returns (path, the report run's id)."""
    evidence = collect_evidence(experiment)
    page = render(evidence)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    with tracking.start_run(f"{names.REPORT}-{experiment}", tags={names.ROLE: names.REPORT, names.REPORTED: experiment},
                            experiment_id=tracking.ensure_experiment(names.REPORTS)) as run:
        run.log_text(page, names.REPORT_FILE)
    return out, run.run_id
