"""Starting and stopping the app's Streamlit server: ``make app`` (scripts/app.py), the browser test and
``scripts/app_screenshot.py`` all go through :func:`start` / :func:`stop` or :func:`main`.

The model is checked before Streamlit starts, so a missing export is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from frozen.app.logic import AppInputError, resolve_load

APP = Path(__file__).resolve().parent / "streamlit_app.py"
# The folder holding this `frozen` package: the server imports the same one (not whatever an editable install
# points at).
PACKAGE_PARENT = Path(__file__).resolve().parents[2]


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when nothing listens on it (127.0.0.1), else a port the OS picks."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred or 0))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command(load: str, port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1",
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--", "--load", load]


def environment() -> dict[str, str]:
    """This process's environment with this `frozen` first on PYTHONPATH and the hub offline by default."""
    paths = [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def start(load: str, port: int | None = None, timeout: float = 120.0, log: Path | None = None,
          cwd: str | Path | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``streamlit run`` in the background (in ``cwd``, default this process's working directory);
    returns ``(process, url)`` once it answers its health check."""
    port = port or free_port()
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(command(load, port), cwd=cwd, env=environment(), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with status {proc.returncode} before serving" +
                               (f"; see {log}" if log else ""))
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
    stop(proc)
    raise RuntimeError(f"streamlit did not answer on {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop the server by its PID (its own process group: nothing else is signalled)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv: list[str] | None = None, root: str | Path = ".") -> int:
    """``make app``: check the model (the demo's exports under ``root`` by default), print the address and
    replace this process by Streamlit, so that Ctrl-C and kill reach it directly."""
    parser = argparse.ArgumentParser(prog="make app ARGS=...", description="start the few-shot app on 127.0.0.1")
    parser.add_argument("--load", help="an export, a training run directory or a hub repo id (default: the demo's)")
    parser.add_argument("--port", type=int, default=8501, help="port on 127.0.0.1 (a free one if taken)")
    args = parser.parse_args(argv)
    try:
        load = resolve_load(args.load, root)
    except AppInputError as err:
        print(f"make app: {err}", file=sys.stderr)
        return 2
    port = free_port(args.port)
    print(f"Frozen app: http://127.0.0.1:{port}  (model: {load}; Ctrl-C stops it)", flush=True)
    os.chdir(root)
    cmd = command(load, port)
    os.execve(cmd[0], cmd, environment())
