"""How the entry points (``train.py``, ``evaluate.py``) end on a user error: one line per problem, exit 2.

Hydra composes the config before our ``main`` runs, so its own errors (unknown key, wrong type,
missing preset) are raised inside Hydra's ``run_and_report``, which prints a stack trace or a multi-line
report and exits 1. :func:`run` wraps that one function (hydra-core is pinned; the test suite checks
the behaviour) so that these errors and every :class:`~frozen.errors.FrozenError` (the preflight
problems and any later error with a one-line message) print as ``error: <line>`` and exit with 2.
Anything else is a bug and keeps Hydra's report. ``debug=true`` on the command line (removed before
Hydra parses it) or ``HYDRA_FULL_ERROR=1`` shows the full Python traceback instead.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from frozen.errors import FrozenError, write_error

USER_ERROR_EXIT = 2
DEBUG_ARGS = ("debug=true", "debug=1", "debug=True", "+debug=true")


def _is_user_error(err: BaseException) -> bool:
    from hydra.errors import CompactHydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(err, (FrozenError, CompactHydraException, OmegaConfBaseException))


def error_lines(err: BaseException) -> list[str]:
    """The message of a user error as one or more self-contained lines."""
    if isinstance(err, FrozenError):
        return [" ".join(line.split()) for line in str(err).splitlines() if line.strip()]
    # Hydra / OmegaConf: "Could not override 'trainer.lr'.\nTo append ...\nValue 'fast' ... Float\n    full_key: ..."
    parts: list[str] = []
    for source in (err, err.__cause__):
        for line in str(source or "").split("\nConfig search path")[0].splitlines():
            line = line.strip()
            noise = ("full_key:", "object_type=", "reference_type=", "To append to your config", "Set the environment")
            if line and not line.startswith(noise) and line not in parts:
                parts.append(line)
    fix = "fix the override (python {} --help lists the config groups; --cfg job prints the config)"
    return [" ".join(parts) + "; " + fix.format(os.path.basename(sys.argv[0]))]


def report(err: BaseException) -> NoReturn:
    """Print ``err`` as ``error: ...`` lines on stderr and exit with :data:`USER_ERROR_EXIT`.

    An error with its own ``exit_code`` (a preempted run's 75) prints ``stopped: ...`` and exits with it.
    """
    lines = error_lines(err)
    prog = os.path.basename(sys.argv[0])
    header = f"{prog}: {len(lines)} problem(s) found" if len(lines) > 1 else None
    code = getattr(err, "exit_code", USER_ERROR_EXIT)  # a preempted run: 75, "run the same command again"
    prefix = "error" if code == USER_ERROR_EXIT else "stopped"
    sys.stderr.write("\n".join(([header] if header else []) + [f"{prefix}: {line}" for line in lines]))
    if code == USER_ERROR_EXIT:
        sys.stderr.write("\n(run again with debug=true or HYDRA_FULL_ERROR=1 for the Python traceback)")
    sys.stderr.write("\n")
    sys.stderr.flush()
    sys.exit(code)


def _debug() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR", "0") not in ("", "0")


def user_errors_exit(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Decorate a Hydra task (under ``@hydra.main``): a :class:`FrozenError` it raises ends as lines + exit 2.

    Caught here rather than after Hydra's job runner, which would first print its own
    "Error executing job with overrides" line.
    """

    @functools.wraps(task)  # Hydra unwraps __wrapped__ to find conf/ next to the script
    def wrapper(cfg: Any) -> Any:
        try:
            return task(cfg)
        except FrozenError as err:
            if _debug():
                raise
            report(err)

    return wrapper


def _debug_requested(argv: list[str]) -> bool:
    flagged = [a for a in argv[1:] if a in DEBUG_ARGS]
    for arg in flagged:
        argv.remove(arg)
    return bool(flagged) or _debug()


def _run_folder_write_error(err: BaseException) -> FrozenError | None:
    """A full disk (or read-only run folder) met by Hydra itself, writing ``.hydra/config.yaml`` before our
    code runs: the one-line :func:`~frozen.errors.write_error` naming that file, else None. Hydra's error
    carries no file name: it is read from the writing frame (``_save_config(cfg, filename, output_dir)``)."""
    tb = err.__traceback__
    while tb is not None:
        found = tb.tb_frame.f_locals
        if tb.tb_frame.f_code.co_name == "_save_config" and "output_dir" in found:
            return write_error(os.path.join(str(found["output_dir"]), str(found.get("filename", ""))), err,
                               "nothing was run")
        tb = tb.tb_next
    return None  # elsewhere: each of our writers names its own file (an unnamed one is a bug to report)


def run(main: Callable[[], Any]) -> Any:
    """Call a ``@hydra.main`` function so that user errors end as one line each and exit code 2."""
    import hydra._internal.utils as hydra_utils

    if _debug_requested(sys.argv):
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then re-raises: Python prints the full traceback
        return main()
    original = hydra_utils.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        try:
            return func()
        except Exception as err:  # noqa: BLE001 - sorted into user errors and bugs right below
            if _is_user_error(err):
                report(err)
            unwritable = _run_folder_write_error(err)
            if unwritable is not None:
                report(unwritable)
            bug = err

            def reraise() -> NoReturn:
                raise bug

            return original(reraise)  # a bug: Hydra's usual report

    hydra_utils.run_and_report = run_and_report
    try:
        result = main()
    except SystemExit as stop:  # a preempted (75) or lost-peer (69) rank, a user error (2)
        _end_rank(stop.code if isinstance(stop.code, int) else None)
        raise
    finally:
        hydra_utils.run_and_report = original
    _end_rank(0)
    return result


def _end_rank(code: int | None) -> None:
    """A rank under torchrun or srun that is done ends with ``code`` and without the interpreter's
    finalization, which a late gloo thread can abort (:func:`frozen.core.dist.exit_process`)."""
    dist = sys.modules.get("frozen.core.dist")
    if code is not None and dist is not None and dist.joined():
        dist.exit_process(code)
