"""A real write limit for a child process: ``RLIMIT_FSIZE`` makes every write past ``max_bytes`` of a file fail
with ``EFBIG``, as a full disk fails it with ``ENOSPC`` (the same code paths: a short write, then an OSError
from ``write``/``close``, a RuntimeError from torch.save's zip writer, an I/O error from safetensors). No root
and no mount needed; the limit is per file, so files that stay small (configs, logs) still write."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def file_size_limit(max_bytes: int):
    """A ``preexec_fn``: the child may write files up to ``max_bytes``; a longer write fails with EFBIG
    (SIGXFSZ, which would kill the child instead, is ignored)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return apply


def run_limited(args: list[str], max_bytes: int, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    """``python *args`` in the repository, offline, with the write limit; stdout and stderr as text."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONDONTWRITEBYTECODE": "1", **env}
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=env, preexec_fn=file_size_limit(max_bytes))


def error_lines(stderr: str) -> list[str]:
    """The lines a user reads as the error (the entry points add a hint line about debug=true)."""
    return [line for line in stderr.splitlines() if line.startswith(("error:", "Traceback", "Exception"))]
