"""torch.distributed set-up, nanoGPT style: DDP is on when ``RANK`` is in the environment.

Three ways in: ``torchrun`` (sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*), ``python train.py num_gpus=N``
(:func:`spawn` starts N local workers and sets the same variables), and multi-node runs with
``num_nodes`` + ``NODE_RANK``/``MASTER_ADDR``/``MASTER_PORT`` (Slurm launchers set them).
CPU-only machines use the gloo backend, which is how the tests cover DDP.
"""

from __future__ import annotations

import faulthandler
import os
import re
import signal
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, NoReturn

import torch
import torch.distributed as dist

from frozen.errors import FrozenError

# How long a rank waits in one collective for the others (trainer.dist_timeout_s's default). torch's own
# defaults are 30 min (gloo) and 10 min (NCCL): that long, every GPU of a job whose node died silently sits
# idle. The longest legitimate wait here is a rank waiting while another does more work between two
# collectives: rank 0 writing a checkpoint (trainable weights + Adam state, seconds), uneven validation
# batches, or, with FSDP, rank 0 reading the whole frozen LM before broadcasting it (14 GB at 200 MB/s is
# ~70 s). Five minutes is four times that.
DEFAULT_TIMEOUT_S = 300.0

# trainer.preempt_signals' choices but SIGINT (a terminal sends Ctrl-C to the whole process group already)
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGXCPU)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def under_slurm() -> bool:
    """Launched as one of several tasks of a job (srun, hydra-submitit-launcher on Slurm or on submitit's
    local executor): the scheduler started every rank, no local spawning."""
    if int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1")) > 1 and "SUBMITIT_LOCAL_GLOBALID" in os.environ:
        return True
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ


def init(requested_device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> DistInfo:
    """Join the process group if launched distributed; otherwise a single-process DistInfo.

    ``timeout_s`` bounds every collective: a rank that stops answering fails the others after that long.
    """
    global _lost_peer, _joined
    _lost_peer = False
    if under_slurm() and "RANK" not in os.environ:
        # submitit knows how to read the Slurm (or its local) variables into RANK/WORLD_SIZE/MASTER_*.
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)  # we pick cuda:LOCAL_RANK
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return DistInfo(device=pick_device(requested_device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=timeout_s),
        )
    _joined = True
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=device)


class PeerLost(FrozenError):
    """A collective failed because another rank died or stopped answering (a node lost, a hung process)."""

    exit_code = 69  # sysexits.h EX_UNAVAILABLE: a peer this job needs is gone


_joined = False  # set by init() once this process joined a process group: see exit_process()
_lost_peer = False  # set by lost_peer(): the process group can no longer synchronise, cleanup() must not wait


def lost_peer(err: BaseException, info: DistInfo, step: int) -> PeerLost | None:
    """A one-line :class:`PeerLost` for ``err`` when a collective failed on a lost peer (else None).

    gloo reports the peer's address ("Connection closed by peer [10.0.0.7]:41234") or a timeout, not its
    rank: with two ranks the other one is named, otherwise the address. (On a timeout NCCL's watchdog
    usually ends the process itself, with torch's message, before an error reaches Python.)
    """
    global _lost_peer
    text = str(err)
    backend = isinstance(err, dist.DistError) or "gloo" in text or "NCCL" in text
    lost = ("connection", "closed", "reset", "broken pipe", "timed out", "timeout")
    if not info.enabled or not backend or not any(m in text.lower() for m in lost):
        return None
    _lost_peer = True
    timed_out = "timed out" in text.lower() or "timeout" in text.lower()
    address = re.search(r"\[([0-9a-fA-F.:]+)\]:\d+", text)
    if info.world_size == 2:
        who = f"rank {1 - info.rank}"
    elif address:
        who = f"the rank at {address.group(1)}"
    else:
        who = "another rank"
    how = "did not answer within trainer.dist_timeout_s" if timed_out else "closed its connection (it died)"
    return PeerLost(
        f"rank {info.rank} lost {who} during step {step + 1}: it {how}; check that node "
        "(its log, dmesg, the scheduler's node state), then relaunch every node with the same command to "
        "resume from the last checkpoint"
    )


def cleanup() -> None:
    if dist.is_initialized() and not _lost_peer:
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """In-place sum across ranks (a no-op without a process group); returns the tensor."""
    if dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def all_gather_objects(obj: Any) -> list[Any]:
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(local_rank: int, fn: Callable[..., Any], args: tuple, num_local: int, node_rank: int, world: int) -> None:
    # A worker killed by a fatal signal (SIGSEGV, SIGABRT from C++) prints every thread's Python stack.
    faulthandler.enable(all_threads=True)
    os.environ.update(
        RANK=str(node_rank * num_local + local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(num_local),
    )
    try:
        fn(*args)
    except Exception as err:
        code = getattr(err, "exit_code", None)  # a preempted run (75): checkpoint written, relaunch to resume
        if code is None:
            raise  # torch's wrapper writes the traceback for the launching process, which reports it
        if local_rank == 0:
            print(f"stopped: {err}", file=sys.stderr, flush=True)
        exit_process(code)
    exit_process(0)


def joined() -> bool:
    """Whether this process joined a process group (a rank of a distributed run) at some point."""
    return _joined


def exit_process(code: int) -> NoReturn:
    """End a rank's process now, skipping the interpreter's finalization.

    Called once the work is done: the process group is destroyed and every file is closed. What is left
    can only fail: a c10d (gloo) thread may still drop the last C++ reference to a tensor that has a
    Python object; during finalization that thread must take the GIL, Python ends it with
    ``pthread_exit``, and the unwinding through a ``noexcept`` destructor aborts the process ("terminate
    called without an active exception", SIGABRT) after its results were written, so the launcher
    reports a crash. A fork()ed multiprocessing child ends with ``os._exit`` for the same reason.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def spawn(fn: Callable[..., Any], args: tuple, num_local: int, num_nodes: int = 1) -> None:
    """Start ``num_local`` worker processes on this node running ``fn(*args)`` as ranks of one job.

    Single node: a free local port is chosen. Several nodes: MASTER_ADDR/MASTER_PORT and NODE_RANK
    must be set (as Slurm/torchrun-style launchers do), and this is run once per node.
    """
    import torch.multiprocessing as mp

    if num_nodes > 1:
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK") if v not in os.environ]
        if missing:
            raise RuntimeError(
                f"num_nodes={num_nodes} needs {', '.join(missing)} in the environment (or launch with torchrun)"
            )
        node_rank = int(os.environ["NODE_RANK"])
    else:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        node_rank = 0
    context = mp.start_processes(
        _worker, args=(fn, args, num_local, node_rank, num_local * num_nodes), nprocs=num_local, join=False
    )

    # A scheduler signals the launching process: pass preemption signals on to every worker, each of
    # which finishes its step, checkpoints and exits with the preempted status, which this process keeps.
    def forward(signum: int, _frame: Any) -> None:
        for proc in context.processes:
            if proc.is_alive():
                os.kill(proc.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        while not context.join():
            pass
    except mp.ProcessExitedException as err:
        if err.exit_code is None or err.exit_code <= 1:  # a crash (1) or a signal (< 0): the worker's own report
            raise
        raise SystemExit(err.exit_code) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
