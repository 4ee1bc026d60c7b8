"""Measurement helpers for ``scripts/bench.py``: workloads, train-step variants, timing, peak memory
(the FLOPs formulas and accelerator peaks are ``frozen.train.flops``).

The step timed is the training loop's own (``frozen.train.step.train_step``). The *plain* variant
is what a straightforward implementation does: the LM's parameters keep ``requires_grad=True`` but
are left out of the optimizer, so every backward pass computes and stores their weight gradients.
The project's step freezes them (``requires_grad=False``), so backward only propagates activation
gradients through the LM, down to the visual prefix.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from PIL import Image

from frozen.data.collate import Collator
from frozen.data.samples import Example
from frozen.eval.episodes import build_easyvqa_binding, easyvqa_labels, episode_prompt, load_image

_COLOURS = ("red", "green", "blue", "yellow", "teal", "brown", "gray", "black")
_SHAPES = ("circle", "rectangle", "triangle")


# ---------------------------------------------------------------------------------------- batches
def synthetic_caption_batch(tokenizer: Any, batch_size: int, image_size: int, seed: int = 0) -> dict[str, Any]:
    """A training batch like easy-VQA captioning: random images, ~12-token captions + EOS.

    Collated by the project's :class:`~frozen.data.collate.Collator`, so padding and labels are exactly
    what the data pipeline produces. Returns the collator's dict (``images [B, 3, S, S]``,
    ``input_ids / attention_mask / labels [B, T]``).
    """
    g = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(batch_size):
        colour, shape = _COLOURS[i % len(_COLOURS)], _SHAPES[i % len(_SHAPES)]
        caption = f" a {colour} {shape} on a white background, seen from above."
        examples.append(
            Example(
                key=f"synthetic{i}",
                kind="caption",
                prompt="",
                target=caption,
                meta={},
                image=torch.rand(3, image_size, image_size, generator=g),
            )
        )
    return Collator(tokenizer, max_length=64)(examples)


# ---------------------------------------------------------------------------------------- generation workloads
def fewshot_inputs(num_queries: int = 25) -> tuple[list[Image.Image], str, list[list[Image.Image]], list[str]]:
    """One 5-way 1-shot easy-VQA binding support set (task induction on) + query images of its categories.

    Returns ``(support_images, support_prompt, query_images, query_prompts)``: the support prompt ends
    with the newline before the query line, ``"<image>Q: What is this? A: This is a"``.
    """
    (episode,) = build_easyvqa_binding("test", ways=5, shots=1, num_episodes=1, seed=0, category="color_shape")
    prompt, images = episode_prompt(episode, task_induction=True)
    cut = prompt.rindex("\n") + 1  # the support ends with the last newline; the query line follows
    support_prompt, query_prompt = prompt[:cut], prompt[cut:]
    labels, used = easyvqa_labels("test"), set(episode.metadata["support_image_ids"])
    categories = list(episode.metadata["name_to_category"].values())
    pools = [[i for i, (c, s, _) in labels.items() if f"{c} {s}" == cat and i not in used] for cat in categories]
    per = -(-num_queries // len(pools))
    query_ids = [i for pool in pools for i in pool[:per]][:num_queries]
    return images[:-1], support_prompt, [[load_image(labels[i][2])] for i in query_ids], [query_prompt] * len(query_ids)


def vqa_inputs(num_prompts: int = 16) -> tuple[list[list[Image.Image]], list[str]]:
    """``num_prompts`` easy-VQA test questions on different images, as ``<image>Q: ... A:`` prompts."""
    import easy_vqa


    questions, _, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    picked, seen = [], set()
    for q, i in zip(questions, image_ids):
        if i not in seen:
            seen.add(i)
            picked.append((q, i))
        if len(picked) == num_prompts:
            break
    images = [[load_image(paths[i])] for _, i in picked]
    return images, [f"<image>Q: {q} A:" for q, _ in picked]


# ---------------------------------------------------------------------------------------- train step
def set_lm_weight_grads(model: Any, enabled: bool) -> None:
    """``enabled``: the plain variant (LM weight gradients computed and kept, though never used).

    Disabling also drops the stored gradients, so the frozen variant starts without them.
    """
    for p in model.lm.parameters():
        p.requires_grad_(enabled)
        if not enabled:
            p.grad = None


def measure_throughput(loader: Iterable[dict[str, Any]], num_batches: int, warmup_batches: int = 2) -> float:
    """Samples per second over ``num_batches`` batches, after ``warmup_batches`` (worker start-up)."""
    iterator = iter(loader)
    for _ in range(warmup_batches):
        next(iterator)
    samples, start = 0, time.perf_counter()
    for _ in range(num_batches):
        samples += len(next(iterator)["keys"])
    return samples / (time.perf_counter() - start)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall-clock seconds of ``fn()``, with the device's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


Timed = Callable[[], Any] | tuple[Callable[[], Any], Callable[[], Any]]


def interleaved(fns: dict[str, Timed], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Time each function ``repeats`` times, alternating between them, after one untimed warm-up each.

    A ``(setup, fn)`` pair runs ``setup()`` untimed before every call of ``fn``.
    """
    pairs = {name: fn if isinstance(fn, tuple) else (lambda: None, fn) for name, fn in fns.items()}
    for setup, fn in pairs.values():
        setup(), fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (setup, fn) in pairs.items():
            setup()
            times[name].append(timed(fn, device))
    return times


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, torch threads, library versions (+ GPU name on CUDA) for a benchmark report."""
    cpuinfo = Path("/proc/cpuinfo")
    names = (
        [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        if cpuinfo.exists()
        else []
    )
    info: dict[str, Any] = {
        "cpu": names[0] if names else platform.processor(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": version("transformers"),  # the installed distribution's, without importing it
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def cpu_times() -> list[int] | None:
    """The aggregate ``cpu`` line of /proc/stat in ticks (user nice system idle iowait irq softirq
    steal ...), or None where there is no /proc/stat (not Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    return [int(v) for v in fields[1:]] if fields and fields[0] == "cpu" else None


def steal_fraction(before: list[int] | None, after: list[int] | None) -> float | None:
    """Share of CPU time between two :func:`cpu_times` readings that the hypervisor gave to other
    guests (field 8, "steal"): on a shared VM, the factor by which wall-clock timings are inflated."""
    if before is None or after is None or min(len(before), len(after)) < 8:
        return None
    delta = [a - b for a, b in zip(after[:8], before[:8])]  # guest time (fields 9-10) is inside user
    total = sum(delta)
    return delta[7] / total if total > 0 else None


# ---------------------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's resident-set high-water mark (Linux ``clear_refs`` 5); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def current_rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    return (kib or 0) * 1024


def peak_rss_bytes() -> int:
    """High-water resident memory since the last :func:`reset_peak_rss` (else since process start)."""
    kib = _status_kib("VmHWM")
    if kib is None:  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS) cannot be reset
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024
