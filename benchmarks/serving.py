"""Serving benchmark (issue 8): `mlflow models serve` on the promoted eyes model vs the same pyfunc in-process.

    .venv/bin/python benchmarks/serving.py [--requests 200] [--workers 1,2] [--clients 1,2,4] [--photos 8] [--no-write]

Trains and promotes a small gender model and eyes model in a temp sqlite store (speed only; `--model-uri`
uses an existing one), so `models:/eyes/Production` bundles the gender model. Payload: 32x60 eye crops from
synthetic photos, base64 JPEG, kind=crop, `gender` on even rows only (one-hot or [0.5, 0.5]: crops never run
the gender model). Latency p50/p95/p99 for 1 and 32 photos and photos/s with 1/2/4 closed-loop keep-alive
clients: in-process `pyfunc.predict` (clients = threads), served with 1 and 2 uvicorn workers; the bare model
compiled (`predict_on_batch`, what the pyfunc runs) vs eager; whole photos (MTCNN) separately.
--requests scales every count. Appends the printed table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.argv[0] = os.path.abspath(sys.argv[0])        # RESULTS.md's command line survives the chdir below
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
VENV_BIN = Path(sys.executable).parent
TARGET_P50, TARGET_THROUGHPUT = 2.0, 0.70


def pcts(ms: list[float]) -> str:
    import numpy as np

    return "/".join(f"{v:.1f}" for v in np.percentile(ms, [50, 95, 99]))


def timed(fn, n: int) -> list[float]:
    """Milliseconds of `n` calls of fn, one after the other."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def closed_loop(make_caller, clients: int, per_client: int) -> float:
    """Calls per second of `clients` threads each making `per_client` calls back to back (at most
    `clients` requests in flight)."""
    callers = [make_caller() for _ in range(clients)]
    start = threading.Barrier(clients + 1)

    def work(fn):
        start.wait()
        for _ in range(per_client):
            fn()

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(work, fn) for fn in callers]
        start.wait()
        t = time.perf_counter()
        for f in futures:
            f.result()
        return clients * per_client / (time.perf_counter() - t)


class Client:
    """One keep-alive HTTP connection to the scoring server."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, body: bytes, retry: bool = True) -> bytes:
        try:
            self.conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            answer = self.conn.getresponse()
            data = answer.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.conn.close()          # the server closed an idle keep-alive connection: reconnect once
            if not retry:
                raise
            return self.post(body, retry=False)
        if answer.status != 200:
            raise RuntimeError(f"HTTP {answer.status}: {data[:500]!r}")
        return data


def post_once(port: int, body: bytes) -> bytes:
    """One request on a new connection, closed after the answer."""
    client = Client(port)
    try:
        return client.post(body)
    finally:
        client.conn.close()


def caller(port: int, body: bytes):
    """A call that posts `body` on a connection of its own."""
    client = Client(port)
    return lambda: client.post(body)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(uri: str, workers: int, cwd: Path, log: Path) -> tuple[subprocess.Popen, int]:
    """`mlflow models serve` in its own process group; returns when every worker has loaded the model."""
    port = free_port()
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(var, None)
    with open(log, "w") as out:
        proc = subprocess.Popen([str(VENV_BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
                                 "-h", "127.0.0.1", "-p", str(port), "--workers", str(workers)], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while log.read_text(errors="replace").count("Application startup complete") < workers:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError(f"the server did not come up; its log:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/ping")
    assert conn.getresponse().status == 200
    conn.close()
    return proc, port


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(proc.name))
    return out


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (uvicorn and its workers), SIGKILL after 20 s; check none is left."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while group_pids(proc.pid) and time.monotonic() < deadline:
            proc.poll()
            time.sleep(0.2)
        if not group_pids(proc.pid):
            break
    proc.wait(timeout=10)
    left = group_pids(proc.pid)
    if left:
        raise RuntimeError(f"server processes still running: {left}")


def train_and_promote(size: int, epochs: int, with_gender: bool) -> str:
    from faceattr import config, experiment
    from faceattr import promotion as promote

    lax = {"gender": ("accuracy", True), "eyes": ("mse", False)}
    for name in (["gender"] if with_gender else []) + ["eyes"]:
        print(f"training {name} ({epochs} epochs, {size} photos) ...", flush=True)
        experiment.train(config.load(name, {"epochs": epochs, "data.size": size, "train.verbose": 0}))
        metric, higher = lax[name]
        policy = promote.Policy(model=name, metric=metric, higher_is_better=higher, thresholds={},
                                require_no_collapse=False)
        result = promote.promote(name, policy=policy)
        assert result.action == "promoted", result.summary()
    return "models:/eyes/Production"


def payloads(size: int, n_photos: int, model) -> tuple[list[dict], list[dict]]:
    """32 eye-band crop rows (base64 JPEG, gender on even rows) and `n_photos` whole-photo rows
    (base64 JPEG, no gender) whose face MTCNN finds."""
    import base64

    import numpy as np
    import pandas as pd
    from PIL import Image

    from faceattr.data import synthetic
    from faceattr.data.regions import crop_region, parse_box
    from faceattr.errors import DataError
    from faceattr.serving import encode_image

    labels = synthetic.default_dataset(size=size)
    frame = pd.read_csv(labels)
    crops = []
    for i, row in frame.head(32).iterrows():
        image = Image.open(labels.parent / row["path"]).convert("RGB")
        record = {"image": encode_image(crop_region(image, "eyes", parse_box(row["eyes_box"])), "JPEG"), "kind": "crop"}
        if i % 2 == 0:
            record["gender"] = row["gender"]
        crops.append(record)
    photos = []
    for path in frame["path"][32:32 + 4 * n_photos]:
        text = encode_image(np.asarray(Image.open(labels.parent / path).convert("RGB")), "JPEG")
        try:
            model.read(base64.b64decode(text), "photo")
        except DataError:              # MTCNN finds no face in a few synthetic photos: skip those
            continue
        photos.append({"image": text, "kind": "photo"})
        if len(photos) == n_photos:
            break
    return crops, photos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="batch-1 latency requests; scales every count")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--clients", default="1,2,4")
    parser.add_argument("--photos", type=int, default=8, help="whole photos (MTCNN path)")
    parser.add_argument("--size", type=int, default=300, help="synthetic photos to train on")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--no-gender-model", action="store_true", help="eyes model without a bundled gender model")
    parser.add_argument("--model-uri", help="benchmark this model (current tracking store) instead of training one")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    n1, n32 = args.requests, max(3, args.requests // 4)                       # sequential latency
    load1, load32 = max(5, args.requests // 2), max(2, args.requests // 10)   # per client, load phases
    clients = [int(c) for c in args.clients.split(",")]
    workers = [int(w) for w in args.workers.split(",")]

    tmp = tempfile.TemporaryDirectory(prefix="faceattr-serving-bench-")
    if not args.model_uri:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp.name}/mlflow.db"    # before mlflow is imported
        os.chdir(tmp.name)                                                     # artifacts go to the temp dir too
    os.environ.setdefault("FACEATTR_CACHE", str(Path(tempfile.gettempdir()) / "faceattr-bench-cache"))
    import mlflow
    import numpy as np
    import pandas as pd

    from benchmarks.common import append_results, machine

    warnings.filterwarnings("ignore", category=FutureWarning)                 # stages are deprecated in MLflow 3
    warnings.filterwarnings("ignore", message=r".*(structure of `inputs`|Add type hints)")   # keras/mlflow noise
    head = machine()
    t_start = time.monotonic()
    uri = args.model_uri or train_and_promote(args.size, args.epochs, not args.no_gender_model)
    setup_s = time.monotonic() - t_start
    pyfunc = mlflow.pyfunc.load_model(uri)
    model = pyfunc.unwrap_python_model()
    crops, photos = payloads(args.size, args.photos, model)
    rows = {1: pd.DataFrame(crops[:1]), 32: pd.DataFrame(crops)}
    bodies = {b: json.dumps({"dataframe_records": crops[:b]}).encode() for b in (1, 32)}
    jpeg = np.mean([len(c["image"]) for c in crops])
    lines = [f"machine: {head}",
             f"model: {uri} (bundled gender model: {'yes' if model.gender_model is not None else 'no'}); "
             f"payload: eye crops 32x60 base64 JPEG (~{jpeg:.0f} chars), kind=crop, gender on even rows; "
             f"batch-1 body {len(bodies[1])} B, batch-32 body {len(bodies[32])} B",
             f"counts: latency {n1} x 1 photo, {n32} x 32 photos; load {load32} x 32 / {load1} x 1 per client"]

    # the bare Keras model: compiled predict_on_batch (what predict_arrays calls) vs eager model(x)
    keras_model = model.model
    traces = keras_model.predict_function.experimental_get_tracing_count()
    lines.append(f"{'bare eyes model':28s} {'1 photo ms':>10s} {'32 photos ms':>12s} {'photos/s @32':>12s}")
    for label, fn in (("compiled predict_on_batch", keras_model.predict_on_batch),
                      ("eager model(x)", lambda x: keras_model(x, training=False))):
        x = {b: {"image": np.zeros((b, 32, 60, 3), np.float32), "gender": np.full((b, 2), 0.5, np.float32)}
             for b in (1, 32)}
        for b in (1, 32):
            timed(lambda: fn(x[b]), 3)                                       # trace / warm up
        ms1, ms32 = np.median(timed(lambda: fn(x[1]), n1 // 2)), np.median(timed(lambda: fn(x[32]), n32))
        lines.append(f"  {label:26s} {ms1:10.1f} {ms32:12.1f} {32000 / ms32:12.0f}")

    # latency and throughput, in-process and served
    results = {}   # label -> {"p50": {1: ms, 32: ms}, "rate": {(batch, clients): photos/s}}

    def measure(label: str, call1, call32, make_caller):
        for call in (call1, call32):
            timed(call, 5)
        lat = {1: timed(call1, n1), 32: timed(call32, n32)}
        rate = {(b, c): b * closed_loop(lambda: make_caller(b), c, load1 if b == 1 else load32)
                for b in (32, 1) for c in clients}
        results[label] = {"p50": {b: float(np.median(ms)) for b, ms in lat.items()}, "rate": rate,
                          "lat": {b: pcts(ms) for b, ms in lat.items()}}

    measure("in-process pyfunc.predict", lambda: pyfunc.predict(rows[1]), lambda: pyfunc.predict(rows[32]),
            lambda b: (lambda: pyfunc.predict(rows[b])))
    retraced = keras_model.predict_function.experimental_get_tracing_count() - traces
    photo_rows = [pd.DataFrame([p]) for p in photos]
    gender_traces = lambda: (model.gender_model.predict_function.experimental_get_tracing_count()  # noqa: E731
                             if model.gender_model is not None else 0)
    before = gender_traces()
    if photo_rows:
        pyfunc.predict(photo_rows[0])       # MTCNN builds its three networks on first use
    photo_ms = {"in-process": [timed(lambda: pyfunc.predict(r), 1)[0] for r in photo_rows]}
    retraced_gender = gender_traces() - before
    started, fresh = {}, {}   # fresh: served latency with a new connection per request

    for w in workers:
        log = Path(tmp.name) / f"serve-{w}.log"
        print(f"serving {uri} with {w} worker(s) ...", flush=True)
        t = time.monotonic()
        proc, port = start_server(uri, w, Path(tmp.name), log)
        started[w] = time.monotonic() - t
        try:
            client = Client(port)
            for b in (1, 32):
                answer = json.loads(client.post(bodies[b]))["predictions"]
                assert len(answer) == b and all(0 <= p["eyes"] <= 1 for p in answer), answer
            closed_loop(lambda: caller(port, bodies[32]), max(clients), 3)   # warm every worker
            label = f"served, {w} worker{'s' if w > 1 else ''}"
            measure(label, lambda: client.post(bodies[1]), lambda: client.post(bodies[32]),
                    lambda b: caller(port, bodies[b]))
            fresh[label] = {b: pcts(timed(lambda: post_once(port, bodies[b]), n)) for b, n in ((1, n1), (32, n32))}
            if w == workers[0] and photos:
                body = [json.dumps({"dataframe_records": [p]}).encode() for p in photos]
                client.post(body[0])
                photo_ms[f"served, {w} worker"] = [timed(lambda: client.post(b), 1)[0] for b in body]
        finally:
            stop_server(proc)
        print("  stopped: no process of the server's group is left", flush=True)

    lines.append(f"{'latency ms p50/p95/p99':28s} {'1 photo':>18s} {'32 photos':>20s}")
    for label, r in results.items():
        lines.append(f"  {label:26s} {r['lat'][1]:>18s} {r['lat'][32]:>20s}")
        if label in fresh:
            lines.append(f"  {label + ', new conn.':26s} {fresh[label][1]:>18s} {fresh[label][32]:>20s}")
    cols = " ".join(f"{f'{b}x{c}':>7s}" for b in (32, 1) for c in clients)
    lines.append(f"{'photos/s (batch x clients)':28s} {cols}")
    for label, r in results.items():
        lines.append(f"  {label:26s} " + " ".join(f"{r['rate'][(b, c)]:7.0f}" for b in (32, 1) for c in clients))
    lines.append(f"retraces of the compiled predict in-process: eyes model {retraced}, bundled gender model "
                 f"{retraced_gender} (0: every call ran the traces made in load_context)")
    base = results["in-process pyfunc.predict"]
    best = lambda r: max(r["rate"][(32, c)] for c in clients)   # noqa: E731
    lines.append(f"served vs in-process (targets: p50 <= {TARGET_P50:g}x, batch-32 photos/s >= {TARGET_THROUGHPUT:.0%})")
    for label, r in results.items():
        if label == "in-process pyfunc.predict":
            continue
        p50 = {b: r["p50"][b] / base["p50"][b] for b in (1, 32)}
        one = r["rate"][(32, clients[0])] / base["rate"][(32, clients[0])]
        top = best(r) / best(base)
        ok = max(p50.values()) <= TARGET_P50 and min(one, top) >= TARGET_THROUGHPUT
        lines.append(f"  {label:26s} p50 {p50[1]:.2f}x (1 photo), {p50[32]:.2f}x (32); batch-32 photos/s "
                     f"{one:.0%} at {clients[0]} client, best {top:.0%} of in-process best -> "
                     f"{'meets targets' if ok else 'MISSES a target'}")
    if photos:
        gender = "bundled gender model" if model.gender_model is not None else "unknown gender"
        lines.append(f"whole photos (kind=photo, no gender in the request: decode, MTCNN, {gender}, eyes), "
                     f"{len(photos)} photos, 1 per request, ms p50/p95/p99:")
        for label, ms in photo_ms.items():
            lines.append(f"  {label:26s} {pcts(ms):>18s}")
    lines.append(f"time: whole benchmark {time.monotonic() - t_start:.0f} s, train + promote {setup_s:.0f} s, "
                 f"server start (every worker loaded) " + ", ".join(f"{w} worker(s) {s:.0f} s" for w, s in started.items()))
    print("\n".join(lines))
    if not args.no_write:
        append_results("serving.py", lines, notes=(
            "Closed loop: each client sends its requests back to back on one keep-alive connection to "
            "127.0.0.1 (client and server share the machine's cores); in-process clients are threads calling "
            "`pyfunc.predict` on the same rows (DataFrame, no JSON). Served times include JSON, HTTP, MLflow's "
            "schema check and the same predict; `new conn.` rows open a connection per request. Crops never run "
            "the bundled gender model: `gender` given -> one-hot, absent -> [0.5, 0.5]. With `--workers` > 1 "
            "uvicorn passes a pre-bound socket whose accepted connections lack TCP_NODELAY, so on a keep-alive "
            "connection every answer after the first waits ~40 ms for the client's delayed ACK "
            "(Kludex/uvicorn#3149); a new connection per request avoids it."))
    os.chdir(REPO)
    tmp.cleanup()


if __name__ == "__main__":
    main()
