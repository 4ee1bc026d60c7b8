"""Shared fixtures: offline environment, tiny HF LMs built on the fly, the packaged SmolLM2; and the check
that the suite leaves the working tree as it found it (git status, and the ignored outputs/, multirun/, data/)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# Offline before anything imports huggingface_hub: a hub lookup otherwise retries for ~45 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from frozen.core.tiny import save_tiny_lm, script_lm  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RUN_FOLDERS = ("outputs", "multirun", "data")  # ignored by git: listed file by file instead
TREE_BEFORE = pytest.StashKey[set]()


def _tree_state() -> set[str] | None:
    """``git status`` lines plus every path under RUN_FOLDERS; None outside a git checkout (e.g. an sdist)."""
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if status.returncode != 0:
        return None
    state = set(status.stdout.splitlines())
    for folder in RUN_FOLDERS:
        for root, dirs, files in os.walk(REPO / folder):
            state |= {os.path.relpath(os.path.join(root, name), REPO) for name in dirs + files}
    return state


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[TREE_BEFORE] = _tree_state()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a test wrote into the working tree: tests write under tmp_path."""
    before, after = session.config.stash.get(TREE_BEFORE, None), _tree_state()
    if before is None or after is None or after == before:
        return
    changed = sorted(after ^ before)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"the test suite changed the working tree ({len(changed)} paths; tests write under "
                            "tmp_path): " + ", ".join(changed[:20]), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def tiny_lm_dirs(tmp_path_factory) -> dict[str, Path]:
    """Random 2-layer GPT-2, Llama and OPT checkpoints + offline tokenizer, saved with save_pretrained."""
    root = tmp_path_factory.mktemp("tiny_lms")
    return {kind: save_tiny_lm(root / kind, kind) for kind in ("gpt2", "llama", "opt")}


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_lm_dirs) -> Path:
    return tiny_lm_dirs["gpt2"]


@pytest.fixture
def tiny_model(tiny_gpt2):
    """A FrozenModel around the tiny GPT-2 with the small CNN at 32 px, k=2."""
    from frozen import FrozenModel

    torch.manual_seed(0)
    return FrozenModel.from_pretrained(str(tiny_gpt2), vision="tiny_cnn", image_size=32)


@pytest.fixture
def scripted(tiny_model, request):
    """``tiny_model`` (eval mode) whose LM writes the test module's ``TEXT`` after any prompt, in every decoding
    path (:func:`frozen.core.tiny.script_lm`); the script is removed afterwards."""
    handles = script_lm(tiny_model.eval(), request.module.TEXT)
    yield tiny_model
    for h in handles:
        h.remove()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The packaged SmolLM2-135M-Instruct, converted once to safetensors in the user cache."""
    from frozen.model.lm import convert_packaged_gguf

    return convert_packaged_gguf("smollm2-135m-instruct-gguf")


COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}
SHAPES = ("square", "bar")


def write_caption_shard(path: Path, num_samples: int = 48, size: int = 32) -> Path:
    """One WebDataset shard of generated pictures (a coloured square or bar) with their captions."""
    import io

    import webdataset as wds
    from PIL import Image, ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(COLORS)
    with wds.TarWriter(str(path)) as sink:
        for i in range(num_samples):
            color, shape = names[i % len(names)], SHAPES[(i // len(names)) % len(SHAPES)]
            img = Image.new("RGB", (size, size), (0, 0, 0))
            box = (8, 8, 24, 24) if shape == "square" else (4, 12, 28, 20)
            ImageDraw.Draw(img).rectangle(box, fill=COLORS[color])
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            sink.write({"__key__": f"sample{i:05d}", "png": buf.getvalue(), "txt": f"a {color} {shape}"})
    return path


def write_vqa_shard(path: Path, num_images: int = 12, size: int = 32, offset: int = 0) -> Path:
    """Two questions per generated picture ("what color ...?", "is there a square?"), answers x10."""
    import io
    import json

    import webdataset as wds
    from PIL import Image, ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(COLORS)
    with wds.TarWriter(str(path)) as sink:
        for i in range(offset, offset + num_images):
            color, shape = names[i % len(names)], SHAPES[(i // len(names)) % len(SHAPES)]
            img = Image.new("RGB", (size, size), (0, 0, 0))
            ImageDraw.Draw(img).rectangle((8, 8, 24, 24) if shape == "square" else (4, 12, 28, 20), fill=COLORS[color])
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            qa = [
                ("what color is the shape?", color, "other"),
                ("is there a square?", "yes" if shape == "square" else "no", "yes/no"),
            ]
            for j, (question, answer, answer_type) in enumerate(qa):
                meta = {
                    "question": question,
                    "answers": [answer] * 10,
                    "answer_type": answer_type,
                    "question_id": i * 10 + j,
                    "image_id": i,
                }
                sink.write({"__key__": f"q{i:04d}_{j}", "png": buf.getvalue(), "json": json.dumps(meta).encode()})
    return path


@pytest.fixture(scope="session")
def caption_data(tmp_path_factory) -> Path:
    """data_root with caps/train-000000.tar (48 samples), caps/val-000000.tar (16 samples),
    vqa/vqa-test-000000.tar (24 questions on 12 images) and vqa/vqa-train-000000.tar (40 on 20)."""
    root = tmp_path_factory.mktemp("data_root")
    write_caption_shard(root / "caps" / "train-000000.tar", 48)
    write_caption_shard(root / "caps" / "val-000000.tar", 16)
    write_vqa_shard(root / "vqa" / "vqa-test-000000.tar", 12, offset=100)
    write_vqa_shard(root / "vqa" / "vqa-train-000000.tar", 20)
    return root
