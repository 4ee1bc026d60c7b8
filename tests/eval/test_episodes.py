"""Few-shot episodes: DeepMind reader on written files, easy-VQA binding set, prompt rendering."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frozen.errors import DataError
from frozen.eval.answer import Query, black_out
from frozen.eval.deepmind import load_deepmind_task
from frozen.eval.episodes import (
    Episode,
    build_easyvqa_binding,
    easyvqa_labels,
    episode_parts,
    episode_prompt,
    task_induction_text,
)
from frozen.model.prompts import IMAGE_MARKER


def _jpg(path: Path, colour: tuple[int, int, int]) -> str:
    Image.new("RGB", (8, 8), colour).save(path)
    return path.name


def _write_task(root: Path, task: str, records: list[dict] | dict, ways: int = 2, shots: int = 1) -> Path:
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task}_shots_{shots}_ways_{ways}_all_questions.json"
    path.write_text(json.dumps(records))
    return path


@pytest.fixture
def open_ended_root(tmp_path) -> Path:
    """open_ended_mi, 2-way 1-shot, the key layout seen in code reading the released files."""
    folder = tmp_path / "open_ended_mi"
    folder.mkdir()
    records = []
    for x in (1, 2):
        stem = f"open_ended_mi_shots_1_ways_2_id_{x}"
        names = ("dax", "blicket") if x == 1 else ("blicket", "dax")
        records.append({
            "question_id": str(x),
            "image_1": _jpg(folder / f"{stem}_image_1.jpg", (255, 0, 0)),
            "caption_1": f"This is a {names[0]}.",
            "image_2": _jpg(folder / f"{stem}_image_2.jpg", (0, 0, 255)),
            "caption_2": f"This is a {names[1]}.",
            "question_image": _jpg(folder / f"{stem}_question.jpg", (255, 0, 0)),
            "question": "What is this?",
            "answer": "dax" if x == 1 else "This is a dax.",
        })
    _write_task(tmp_path, "open_ended_mi", records)
    return tmp_path


def test_deepmind_reader_numbered_keys(open_ended_root):
    episodes = load_deepmind_task(open_ended_root, "open_ended_mi", ways=2, shots=1)
    assert [e.episode_id for e in episodes] == ["1", "2"]
    first = episodes[0]
    assert [caption for _, caption in first.support] == ["This is a dax.", "This is a blicket."]
    assert Path(first.support[0][0]).name == "open_ended_mi_shots_1_ways_2_id_1_image_1.jpg"
    assert Path(first.query_image).name == "open_ended_mi_shots_1_ways_2_id_1_question.jpg"
    assert (first.ways, first.shots, first.repeats) == (2, 1, 0)
    assert first.answer == "dax" and episodes[1].answer == "dax"  # "This is a dax." stripped to the name
    assert first.task_induction == "Answer with dax or blicket."
    assert episodes[1].task_induction == "Answer with blicket or dax."  # names in support order
    assert first.query_text == "Q: What is this? A: This is a"
    assert first.metadata["raw_question"] == "What is this?"
    # The task folder itself works as root too.
    assert len(load_deepmind_task(open_ended_root / "open_ended_mi", "open_ended_mi", ways=2, shots=1)) == 2


def test_deepmind_reader_list_keys_vqa(tmp_path):
    folder = tmp_path / "fast_vqa"
    folder.mkdir()
    stem = "fast_vqa_shots_1_ways_2_id_7"
    record = {
        "id": 7,
        "support_images": [_jpg(folder / f"{stem}_image_{i}.jpg", (0, 255, 0)) for i in (1, 2)],
        "captions": ["This is a dax.", "This is a blicket."],
        "query_image": _jpg(folder / f"{stem}_question.jpg", (0, 0, 0)),
        "question": "What color is the dax? ",
        "answers": ["green", "lime"],
    }
    _write_task(tmp_path, "fast_vqa", {"questions": [record]})
    (episode,) = load_deepmind_task(tmp_path, "fast_vqa", ways=2, shots=1)
    assert (episode.episode_id, episode.question, episode.answer) == ("7", "What color is the dax?", "green")
    assert episode.metadata["answers"] == ["green", "lime"]
    assert episode.task_induction == "" and episode.answer_prefix == ""
    text, images = episode_prompt(episode, task_induction=False)
    assert text == "<image>This is a dax.\n<image>This is a blicket.\n<image>Q: What color is the dax? A:"
    assert len(images) == 3
    assert np.allclose(images[0].getpixel((0, 0)), (0, 255, 0), atol=3)  # jpeg: nearly exact
    with pytest.raises(ValueError, match="no task-induction text"):
        episode_prompt(episode, task_induction=True)


def test_deepmind_reader_unrecognised_layout(tmp_path):
    path = _write_task(tmp_path, "guided_vqa", [{"qid": 1, "pictures": ["a.jpg"], "answer": "red"}])
    with pytest.raises(DataError) as err:
        load_deepmind_task(tmp_path, "guided_vqa", ways=2, shots=1)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message and "['answer', 'pictures', 'qid']" in message
    assert "question_image" in message and "image_1..image_N" in message and "caption_1..caption_N" in message


def test_deepmind_reader_vqa_needs_question(tmp_path):
    folder = tmp_path / "fast_vqa"
    folder.mkdir()
    record = {"image_1": _jpg(folder / "s.jpg", (1, 2, 3)), "caption_1": "This is a dax.",
              "question_image": _jpg(folder / "q.jpg", (1, 2, 3)), "answer": "red"}
    _write_task(tmp_path, "fast_vqa", [record])
    with pytest.raises(DataError, match="unrecognised layout"):
        load_deepmind_task(tmp_path, "fast_vqa", ways=2, shots=1)


def test_deepmind_reader_missing_files(open_ended_root):
    with pytest.raises(DataError, match=r"no open_ended_mi_shots_5_ways_2_all_questions\.json.*"
                                        r"found: open_ended_mi_shots_1_ways_2_all_questions\.json"):
        load_deepmind_task(open_ended_root, "open_ended_mi", ways=2, shots=5)
    (open_ended_root / "open_ended_mi" / "open_ended_mi_shots_1_ways_2_id_2_image_2.jpg").unlink()
    with pytest.raises(DataError, match=r"question 2 names image 'open_ended_mi_shots_1_ways_2_id_2_image_2\.jpg'"):
        load_deepmind_task(open_ended_root, "open_ended_mi", ways=2, shots=1)
    with pytest.raises(ValueError, match="unknown DeepMind few-shot task"):
        load_deepmind_task(open_ended_root, "mini_imagenet", ways=2, shots=1)


# ------------------------------------------------------------------------------- Prompt format


def _episode(**kw) -> Episode:
    red, blue = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))
    base = dict(source="open_ended_mi", episode_id="0", support=[(red, "This is a dax."), (blue, "This is a blicket.")],
                query_image=Image.new("RGB", (4, 4), (0, 255, 0)), question="What is this?", answer="dax",
                ways=2, shots=1, task_induction="Answer with dax or blicket.", answer_prefix="This is a")
    return Episode(**{**base, **kw})


def test_episode_prompt_conditions():
    ep = _episode()
    text, images = episode_prompt(ep, task_induction=True)
    assert text == ("Answer with dax or blicket.\n<image>This is a dax.\n<image>This is a blicket.\n"
                    "<image>Q: What is this? A: This is a")
    assert [im.getpixel((0, 0)) for im in images] == [(255, 0, 0), (0, 0, 255), (0, 255, 0)]
    text, images = episode_prompt(ep, task_induction=False, with_images=False)
    assert text == "This is a dax.\nThis is a blicket.\n<image>Q: What is this? A: This is a"
    assert [im.getpixel((0, 0)) for im in images] == [(0, 255, 0)]
    text, images = episode_prompt(ep, task_induction=False, with_images=False, query_image=False)
    assert (text, images) == ("This is a dax.\nThis is a blicket.\nQ: What is this? A: This is a", [])
    text, images = episode_prompt(ep, task_induction=False, query_image=False)
    assert text.endswith("<image>This is a blicket.\nQ: What is this? A: This is a") and len(images) == 2


def test_episode_prompt_repeats_and_marker_count():
    ep = dataclasses.replace(_episode(), repeats=2)
    text, images = episode_prompt(ep, task_induction=False)
    assert text.count(IMAGE_MARKER) == len(images) == 2 * 3 + 1
    assert text.split("\n")[:4] == ["<image>This is a dax.", "<image>This is a blicket."] * 2
    assert images[0] is images[2]  # a repeated image is loaded once


def test_episode_parts_split_support_from_query_and_black_out_keeps_them_apart():
    ep = _episode()
    support, query = episode_parts(ep, task_induction=True)
    # the support is everything the episode's queries share, through the newline before the query
    assert support.text == "Answer with dax or blicket.\n<image>This is a dax.\n<image>This is a blicket.\n"
    assert query.text == "<image>Q: What is this? A: This is a" and query.num_images == 1
    q = Query.grouped("e0", support, query, "s0", target="dax")
    assert (q.prompt, len(q.images)) == (episode_prompt(ep, task_induction=True)[0], 3)
    (black,) = black_out([q], image_size=4)
    for images in (black.images, black.parts[0].images, black.parts[1].images):  # the shared path sees zeros too
        assert all(float(im.abs().sum()) == 0.0 for im in images)
    assert black.parts[0].texts == support.texts and black.prompt == q.prompt


def test_task_induction_text():
    assert task_induction_text(["dax", "blicket"]) == "Answer with dax or blicket."
    assert task_induction_text(["dax", "blicket", "wug"]) == "Answer with dax, blicket or wug."
    with pytest.raises(ValueError):
        task_induction_text(["dax"])


# -------------------------------------------------------------------------- easy-VQA binding set


def test_binding_set_deterministic_and_prefix_stable():
    a = build_easyvqa_binding(ways=2, shots=3, num_episodes=12, seed=1)
    b = build_easyvqa_binding(ways=2, shots=3, num_episodes=12, seed=1)
    assert a == b
    assert build_easyvqa_binding(ways=2, shots=3, num_episodes=5, seed=1) == a[:5]
    c = build_easyvqa_binding(ways=2, shots=3, num_episodes=12, seed=2)
    assert [e.metadata["support_image_ids"] for e in a] != [e.metadata["support_image_ids"] for e in c]


@pytest.mark.parametrize("ways, shots, category", [(2, 1, "shape"), (3, 5, "shape"), (5, 3, "color_shape")])
def test_binding_episode_structure(ways, shots, category):
    episodes = build_easyvqa_binding(ways=ways, shots=shots, num_episodes=6 * ways, category=category)
    labels = easyvqa_labels("test")
    names = ["dax", "blicket", "wug", "zib", "toma"][:ways]
    for ep in episodes:
        support_ids, query_id = ep.metadata["support_image_ids"], ep.metadata["query_image_id"]
        assert query_id not in support_ids and len(set(support_ids)) == ways * shots == len(ep.support)
        assert Counter(caption for _, caption in ep.support) == {f"This is a {n}.": shots for n in names}
        assert ep.task_induction == task_induction_text(names) and ep.answer in names
        assert ep.query_text == "Q: What is this? A: This is a"
        # Every caption and the answer agree with the easy-VQA label of the image.
        mapping = ep.metadata["name_to_category"]
        assert len(set(mapping.values())) == ways
        for image_id, (path, caption) in zip(support_ids, ep.support):
            colour, shape, label_path = labels[image_id]
            assert path == label_path
            category_of_image = shape if category == "shape" else f"{colour} {shape}"
            assert mapping[re.fullmatch(r"This is a (\w+)\.", caption).group(1)] == category_of_image
        colour, shape, _ = labels[query_id]
        assert mapping[ep.answer] == (shape if category == "shape" else f"{colour} {shape}")
    assert Counter(ep.answer for ep in episodes) == {n: 6 for n in names}  # balanced answers


def test_binding_several_queries_share_one_support_set():
    single = build_easyvqa_binding(ways=3, shots=2, num_episodes=4, seed=3)
    assert single == build_easyvqa_binding(ways=3, shots=2, num_episodes=4, seed=3, queries_per_episode=1)
    assert all(ep.support_id is None for ep in single)
    multi = build_easyvqa_binding(ways=3, shots=2, num_episodes=4, seed=3, queries_per_episode=5)
    assert len(multi) == 4 * 5 and len({ep.episode_id for ep in multi}) == 20
    labels = easyvqa_labels("test")
    for e in range(4):
        group = multi[5 * e : 5 * e + 5]
        assert {ep.support_id for ep in group} == {single[e].episode_id}
        assert all(ep.support is group[0].support for ep in group)  # one list: one support set
        query_ids = [ep.metadata["query_image_id"] for ep in group]
        assert len(set(query_ids)) == 5 and not set(query_ids) & set(group[0].metadata["support_image_ids"])
        assert [ep.answer for ep in group] == [["dax", "blicket", "wug"][(e * 5 + j) % 3] for j in range(5)]
        for ep, query_id in zip(group, query_ids):
            assert ep.metadata["name_to_category"][ep.answer] == labels[query_id][1]
    with pytest.raises(ValueError, match="queries_per_episode >= 1"):
        build_easyvqa_binding(queries_per_episode=0)


def test_binding_labels_agree_with_yes_no_questions():
    import easy_vqa

    labels = easyvqa_labels("test")
    pattern = re.compile(
        r"(?:is there a|is a|does the image contain a) (circle|rectangle|triangle)(?: present| in the image)?\?"
    )
    checked = 0
    for text, answer, image_id in zip(*easy_vqa.get_test_questions()):
        m = pattern.fullmatch(text)
        if m and labels[image_id][1] is not None:
            assert (answer == "yes") == (labels[image_id][1] == m.group(1)), (image_id, text, answer)
            checked += 1
    assert checked > 500


def test_binding_labels_match_drawn_shapes():
    # Fill ratio of the shape in its bounding box: triangle ~0.5-0.7, circle ~0.73-0.9, rectangle ~1.
    def drawn_shape(path: str) -> str:
        pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
        mask = np.abs(pixels - pixels[0, 0]).sum(-1) > 60
        ys, xs = np.nonzero(mask)
        ratio = mask.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
        return "triangle" if ratio < 0.71 else "circle" if ratio < 0.915 else "rectangle"

    for ep in build_easyvqa_binding(ways=3, shots=2, num_episodes=6):
        shape_of_name = ep.metadata["name_to_category"]
        for path, caption in ep.support:
            assert drawn_shape(path) == shape_of_name[caption[len("This is a "):-1]]
        assert drawn_shape(ep.query_image) == shape_of_name[ep.answer]


def test_binding_set_errors():
    with pytest.raises(ValueError, match="color_shape"):
        build_easyvqa_binding(ways=4)
    with pytest.raises(ValueError, match="distinct names"):
        build_easyvqa_binding(ways=2, names=["dax", "dax"])
    with pytest.raises(ValueError, match="ways >= 2"):
        build_easyvqa_binding(ways=1)
    with pytest.raises(ValueError, match="split"):
        easyvqa_labels("val")
