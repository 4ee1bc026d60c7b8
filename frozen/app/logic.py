"""What the app does, without the UI: find the model, build interleaved prompts, generate, compare blind.

The prompt formats are the evaluation's own (``conf/eval/demo.yaml`` read into
:class:`~frozen.config.EvalTaskConfig`; binding episodes from :mod:`frozen.eval.episodes`), so a preset
shows exactly what ``make demo`` evaluated. A prompt is an ordered list of :class:`Turn` s, each an
optional image followed by text; turns are joined with the task separator (``"\\n"``), an image
becoming an ``<image>`` slot (:mod:`frozen.model.prompts`).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import easy_vqa
import torch
import yaml
from PIL import Image, UnidentifiedImageError

from frozen.config import EVAL_TASK_KINDS, EvalTaskConfig, eval_task_from_dict
from frozen.core.conf import conf_dir
from frozen.errors import ContextLengthError
from frozen.eval.episodes import build_easyvqa_binding, easyvqa_labels, episode_prompt, load_image
from frozen.model.embedding import check_context, embed_prompts
from frozen.model.export import CONFIG_NAME, find_export
from frozen.model.lm import looks_like_path
from frozen.model.prompts import IMAGE_MARKER, Prompt, query_rng, render, sample_shots, split_prompt

DEFAULT_EXPORTS = ("outputs/demo/frozen_vqa/export", "outputs/demo/frozen/export")
EVAL_PRESET = conf_dir() / "eval" / "demo.yaml"
PRESETS = ("Captioning", "VQA 0-shot", "VQA 1-shot", "VQA 4-shot", "Fast binding 2-way",
           "Fast binding 2-way + task induction")


class AppInputError(ValueError):
    """A user error shown as one line in the page (never a traceback)."""


@dataclass
class Turn:
    """One step of the prompt: an optional image, then text. ``label`` names the image (gallery id, file)."""

    text: str = ""
    image: Image.Image | None = None
    label: str = ""


# ------------------------------------------------------------------------------------------ model
def resolve_load(load: str | None, root: str | Path = ".") -> str:
    """The export to serve: ``load`` when it is an export, a run directory or a hub id; else the demo's.

    Raises :class:`AppInputError` saying to run ``make demo`` or pass ``--load`` when there is none.
    """
    if load:
        found = find_export(load)
        if found is not None:
            return str(found)
        # a local folder without an export, or not owner/name: no hub id of an export either
        if looks_like_path(load) or load.count("/") != 1:  # exports on the hub are owner/name
            raise AppInputError(f"--load {load}: no frozen_config.json there; give a save_pretrained export, a "
                                "training run directory holding export/, or a hub repo id (owner/name)")
        return load  # a hub repo id: FrozenModel.from_pretrained resolves it
    for candidate in DEFAULT_EXPORTS:
        if (Path(root) / candidate / CONFIG_NAME).is_file():
            return str(Path(root) / candidate)
    raise AppInputError(f"no trained model at {' or '.join(DEFAULT_EXPORTS)}: run `make demo` first, or pass "
                        "--load PATH (an export, a run directory or a hub repo id), e.g. make app ARGS=\"--load PATH\"")


# ------------------------------------------------------------------------------------------ presets
@lru_cache(maxsize=1)
def eval_tasks() -> dict[str, EvalTaskConfig]:
    """The demo evaluation's tasks (caption, vqa, binding) as typed configs; defaults if the file is absent."""
    raw = yaml.safe_load(EVAL_PRESET.read_text()).get("tasks", {}) if EVAL_PRESET.is_file() else {}
    # each task validated into the schema its kind names, exactly as evaluate.py reads it
    tasks = {spec.get("kind", name): eval_task_from_dict(name, spec) for name, spec in raw.items()}
    for kind in ("caption", "vqa", "binding"):
        tasks.setdefault(kind, EVAL_TASK_KINDS[kind]())
    return tasks


def gallery(limit: int = 30) -> list[tuple[str, str]]:
    """``(label, png path)`` of the first ``limit`` easy-VQA test images, e.g. ``("test #0: red triangle", ...)``."""
    labels = easyvqa_labels("test")
    return [(f"test #{i}: {colour or ''} {shape or 'shape'}".replace(":  ", ": "), path)
            for i, (colour, shape, path) in list(labels.items())[:limit]]


@lru_cache(maxsize=2)
def _questions(split: str) -> tuple[list[tuple[str, str, int]], dict[int, str]]:
    texts, answers, image_ids = getattr(easy_vqa, f"get_{split}_questions")()
    return list(zip(texts, answers, image_ids)), getattr(easy_vqa, f"get_{split}_image_paths")()


def _turns_from_prompt(prompt: str, images: Sequence[Image.Image], separator: str, labels: Sequence[str]) -> list[Turn]:
    """Inverse of :func:`assemble` for prompts whose images start their lines (the eval's formats)."""
    turns, it = [], iter(zip(images, labels))
    for line in prompt.split(separator):
        if line.startswith(IMAGE_MARKER):
            image, label = next(it)
            turns.append(Turn(line[len(IMAGE_MARKER):], image, label))
        else:
            turns.append(Turn(line))
    return turns


def preset_turns(name: str, query_path: str, query_label: str = "", seed: int = 0) -> list[Turn]:
    """The turns of preset ``name`` asking about the image at ``query_path`` (binding: episode ``seed``)."""
    if name not in PRESETS:
        raise AppInputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    tasks = eval_tasks()
    if name == "Captioning":
        return [Turn(tasks["caption"].caption_prompt, load_image(query_path), query_label)]
    if name.startswith("VQA"):
        task, shots = tasks["vqa"], int(name.split()[1].split("-")[0])
        test_qs, test_paths = _questions("test")
        image_id = next((i for i, p in test_paths.items() if Path(p) == Path(query_path)), None)
        question = next((q for q, _, i in test_qs if i == image_id), "What shape is in the image?")
        train_qs, train_paths = _questions("train")
        rng = query_rng(seed, 0, f"app/{query_path}")
        turns = []
        for k in sample_shots(len(train_qs), shots, rng):
            q, answer, i = train_qs[k]
            text = render(task.prompt, question=q) + render(task.demo_answer, answer=answer)
            turns.append(Turn(text, load_image(train_paths[i]), f"train #{i}"))
        return turns + [Turn(render(task.prompt, question=question), load_image(query_path), query_label)]
    task = tasks["binding"]  # the two "Fast binding 2-way" presets
    episode = build_easyvqa_binding(split=task.split, ways=2, shots=1, num_episodes=seed + 1, seed=0,
                                    category=task.category)[seed]
    prompt, images = episode_prompt(episode, task_induction=name.endswith("task induction"))
    ids = [*episode.metadata["support_image_ids"], episode.metadata["query_image_id"]]
    return _turns_from_prompt(prompt, images, "\n", [f"test #{i}" for i in ids])


def preset_settings(name: str) -> dict[str, Any]:
    """Decoding defaults of the evaluated task behind a preset: max new tokens, stop string."""
    kind = "caption" if name == "Captioning" else "vqa" if name.startswith("VQA") else "binding"
    return {"max_new_tokens": eval_tasks()[kind].max_new_tokens, "stop": "\n"}


# ------------------------------------------------------------------------------------------ prompts
def parse_stop(typed: str) -> str:
    """The stop string typed in the page: ``\\n`` and ``\\t`` become newline and tab, nothing else changes."""
    return typed.replace("\\n", "\n").replace("\\t", "\t")


def show_stop(stop: str) -> str:
    """Inverse of :func:`parse_stop` for display in a one-line text field."""
    return stop.replace("\n", "\\n").replace("\t", "\\t")


def read_upload(name: str, data: bytes) -> Image.Image:
    """An uploaded file as an RGB image, or :class:`AppInputError` naming the file."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError):
        raise AppInputError(f"{name} is not an image PIL can read: upload a PNG, JPEG, GIF, BMP or WebP file") from None


def assemble(turns: Sequence[Turn], separator: str = "\n") -> tuple[str, list[Image.Image]]:
    """``(prompt, images)``: each turn is ``[<image>]text``, joined by ``separator``; checks the result."""
    prompt = separator.join((IMAGE_MARKER if t.image is not None else "") + t.text for t in turns)
    images = [t.image for t in turns if t.image is not None]
    if not images and not prompt.strip():
        raise AppInputError("the prompt is empty: pick a preset, or add an image or some text to a turn")
    typed = [i + 1 for i, t in enumerate(turns) if IMAGE_MARKER in t.text]
    try:
        split_prompt(prompt, len(images))
    except ValueError:
        raise AppInputError(f"the prompt has {prompt.count(IMAGE_MARKER)} {IMAGE_MARKER} markers but {len(images)} "
                            f"images: remove the {IMAGE_MARKER} typed in turn {', '.join(map(str, typed))} "
                            "(each turn's "
                            "image goes in through its image picker)") from None
    return prompt, images


def blind_prompt(prompt: str, tokenizer: Any) -> str:
    """The prompt with its images removed; an image-only prompt starts from the LM's BOS/EOS, as the eval does."""
    text = prompt.replace(IMAGE_MARKER, "")
    return text if text else (tokenizer.bos_token or tokenizer.eos_token)


def prompt_pieces(prompt: str, images: Sequence[Image.Image]) -> list[str | Image.Image]:
    """Text segments and images in the order the model reads them (for display)."""
    pieces: list[str | Image.Image] = []
    for j, text in enumerate(split_prompt(prompt, len(images))):
        if j:
            pieces.append(images[j - 1])
        if text:
            pieces.append(text)
    return pieces


def token_counts(model: Any, prompt: str, num_images: int) -> tuple[int, int]:
    """``(text tokens, image slots x k)``; text tokenised segment by segment, as generation does."""
    tokenized = Prompt.parse(prompt, [None] * num_images).tokenize(model.tokenizer)  # images unused here
    return sum(len(ids) for ids in tokenized.ids), num_images * model.num_prefix_tokens


# ------------------------------------------------------------------------------------------ model calls
def generate(model: Any, prompt: str, images: Sequence[Image.Image], *, num_beams: int = 1,
             max_new_tokens: int = 8, stop: str = "") -> tuple[str, float]:
    """``(answer, seconds)`` from ``FrozenModel.generate`` (greedy for 1 beam); a prompt longer than the
    LM's context is an :class:`AppInputError` saying how many positions it needs and the LM has."""
    start = time.perf_counter()
    try:
        answer = model.generate(images=[list(images)], prompts=[prompt], max_new_tokens=max_new_tokens,
                                num_beams=num_beams, stop_strings=[stop] if stop else None)[0]
    except ContextLengthError as err:
        raise AppInputError(str(err)) from None
    return answer, time.perf_counter() - start


@torch.no_grad()
def next_token_probs(model: Any, prompt: str, images: Sequence[Image.Image]) -> torch.Tensor:
    """``[V]`` probabilities of the first answer token: the LM's softmax after the whole prompt.

    The input is the one generation builds (:func:`frozen.model.embedding.embed_prompts`: text segments
    tokenised separately, each image's ``[k, D]`` visual prefix in its slot), as one sequence ``[1, L, D]``;
    the test checks it against ``FrozenModel.forward``.
    """
    try:  # the first answer token is read at the prompt's last position: no new positions needed
        check_context(model, [Prompt.parse(prompt, list(images)).tokenize(model.tokenizer)], 0)
    except ContextLengthError as err:
        raise AppInputError(str(err)) from None
    embeds = embed_prompts(model, [list(images)], [prompt])[0].unsqueeze(0)  # [1, L, D]
    mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    logits = model.lm(inputs_embeds=embeds, attention_mask=mask).logits
    return torch.softmax(logits[0, -1].float(), dim=-1)


def compare_top(tokenizer: Any, with_image: torch.Tensor, blind: torch.Tensor, top: int = 10) -> list[dict[str, Any]]:
    """The ``top`` tokens most likely under either condition, by the larger of their two probabilities.

    Rows ``{"token": repr of its text, "id": token id, "image": p, "no image": p}``, most likely first; a
    text shared by several tokens (bytes of one character) gets its id appended, so labels stay distinct.
    """
    best = torch.maximum(with_image, blind)
    ids = torch.topk(best, k=min(top, best.numel())).indices.tolist()
    texts = [repr(tokenizer.decode([i])) for i in ids]
    return [{"token": t if texts.count(t) == 1 else f"{t} #{i}", "id": i, "image": float(with_image[i]),
             "no image": float(blind[i])} for t, i in zip(texts, ids)]
