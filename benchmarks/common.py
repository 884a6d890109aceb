"""What every benchmark script shares: the machine line and appending a section to RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "RESULTS.md"


def machine(framework: str = "tensorflow") -> str:
    """CPU model, cores, load, framework version, Python, and the GPU if one is visible."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if framework == "tensorflow":
        import tensorflow as tf

        versions = f"TF {tf.__version__}"
        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    else:
        import keras

        versions = f"Keras {keras.__version__} on {keras.backend.backend()}"
        gpus = gpu_names()
    gpu = f", GPU {', '.join(gpus)}" if gpus else ", no GPU"
    return (f"{cpu}, {os.cpu_count()} cores (load {load:.1f} at start), {versions}, "
            f"Python {platform.python_version()}{gpu}")


def gpu_names() -> list[str]:
    """GPU names from nvidia-smi (empty without one)."""
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


SCRIPT = os.path.abspath(sys.argv[0])   # taken at import: a benchmark may change its working directory later


def command_line() -> str:
    """The command that ran this script, as a reader would type it."""
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(SCRIPT, REPO), *sys.argv[1:]])


def append_results(title: str, lines: list[str], notes: str = "") -> None:
    """Add a dated section (the command, its printed figures, optional notes) to benchmarks/RESULTS.md."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = f"\n## {title}, {stamp}\n\n`{command_line()}`\n\n```\n" + "\n".join(lines) + "\n```\n"
    if notes:
        text += "\n" + notes.strip() + "\n"
    with open(RESULTS, "a") as fh:
        fh.write(text)


def spread(values: list[float], fmt: str = ".3f") -> str:
    """`mean ± sd` of one figure over seeds (sd 0 for one value), each written with `fmt`."""
    import statistics

    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{fmt}} ± {sd:{fmt}}"
