"""The app's page under streamlit.testing's AppTest, with the tiny export: presets, generate, blind, bad input."""

from __future__ import annotations

import io
import json

from PIL import Image

from frozen.app import logic as L


def _texts(elements) -> list[str]:
    return [e.value for e in elements]


def test_presets_fill_the_editor(page, tiny_export):
    at = page(tiny_export)
    assert not at.exception and not at.error
    label, path = L.gallery()[0]
    assert at.selectbox(key="preset").value == "VQA 0-shot" and at.selectbox(key="query").value == label
    assert _texts(at.code) == ["<image>Q: what is the red shape? A:"]
    at.selectbox(key="preset").set_value("VQA 4-shot").run()
    prompt = at.code[0].value
    assert prompt.count("<image>") == 5 and prompt.endswith("\n<image>Q: what is the red shape? A:")
    assert len(at.text_area) == 5 and at.text_area[-1].value == "Q: what is the red shape? A:"
    assert at.number_input(key="max_new_tokens").value == 4  # conf/eval/demo.yaml's VQA task
    at.selectbox(key="preset").set_value("Fast binding 2-way + task induction").run()
    lines = at.code[0].value.split("\n")
    assert lines[0] == "Answer with dax or blicket." and lines[-1] == "<image>Q: What is this? A: This is a"
    assert _texts(at.text_area)[0] == "Answer with dax or blicket."
    at.selectbox(key="preset").set_value("Captioning").run()
    assert _texts(at.code) == ["<image>"] and at.number_input(key="max_new_tokens").value == 8
    assert any("0 text tokens + 1 image(s) × k=2 prefix embeddings = 2 positions" in c for c in _texts(at.caption))
    # editing: add a turn, type into it, remove the first turn; the typed text survives
    at.button(key="add").click().run()
    at.text_area[1].input("Q: what shape? A:").run()
    at.button(key=f"del_{at.session_state.version}_0").click().run()
    assert _texts(at.code) == ["Q: what shape? A:"]
    # a gallery image for the remaining turn, then an uploaded PNG instead
    v = at.session_state.version
    at.selectbox(key=f"img_{v}_0").set_value(L.gallery()[2][0]).run()
    assert _texts(at.code) == ["<image>Q: what shape? A:"] and len(at.get("image")) == 2  # editor + prompt thumbnails
    at.selectbox(key=f"img_{v}_0").set_value("upload a file…").run()
    assert _texts(at.code) == ["Q: what shape? A:"]  # no file yet: no image
    png = io.BytesIO()
    Image.new("RGB", (20, 10), "green").save(png, format="PNG")
    at.file_uploader[0].upload("green.png", png.getvalue(), "image/png").run()
    assert _texts(at.code) == ["<image>Q: what shape? A:"] and not at.error


def test_generate_gives_the_models_answer_and_the_blind_comparison(page, tiny_export, export_model):
    at = page(tiny_export)
    at.selectbox(key="preset").set_value("VQA 1-shot").run()
    at.button(key="generate").click().run()
    assert not at.exception and not at.error
    turns = L.preset_turns("VQA 1-shot", L.gallery()[0][1], L.gallery()[0][0])
    prompt, images = L.assemble(turns)
    expected = export_model.generate(images=[images], prompts=[prompt], max_new_tokens=4, stop_strings=["\n"])[0]
    blind = export_model.generate(prompts=[L.blind_prompt(prompt, export_model.tokenizer)], max_new_tokens=4,
                                  stop_strings=["\n"])[0]
    assert _texts(at.success) == [f"Answer: {expected!r}"]
    assert _texts(at.info) == [f"Answer: {blind!r}"]
    assert any(c.endswith(" ms") for c in _texts(at.caption))  # the latency
    table = at.dataframe[0].value
    assert list(table.columns) == ["token", "id", "image", "no image"] and len(table) == 10
    assert ((table[["image", "no image"]] >= 0) & (table[["image", "no image"]] <= 1)).all().all()
    assert table[["image", "no image"]].max(axis=1).is_monotonic_decreasing
    assert at.get("vega_lite_chart"), "the probability bar chart is missing"
    # beam search goes through the same call
    at.radio(key="decoding").set_value("beam search").run()
    at.button(key="generate").click().run()
    beams = export_model.generate(images=[images], prompts=[prompt], max_new_tokens=4, num_beams=3,
                                  stop_strings=["\n"])[0]
    assert _texts(at.success) == [f"Answer: {beams!r}"]


def test_each_bad_input_shows_one_message(page, tiny_export, tmp_path):
    at = page(tiny_export)
    # a non-image upload in turn 1
    at.selectbox(key="img_1_0").set_value("upload a file…").run()
    at.file_uploader[0].upload("notes.txt", b"not a picture", "text/plain").run()
    assert _texts(at.error) == ["turn 1: notes.txt is not an image PIL can read: upload a PNG, JPEG, GIF, BMP or "
                                "WebP file"]
    assert at.button(key="generate").disabled and not at.exception
    # an <image> typed into the text: markers and images disagree
    at = page(tiny_export)
    at.text_area[0].input("<image>Q: what is it? A:").run()
    assert len(at.error) == 1 and "2 <image> markers but 1 images" in at.error[0].value and not at.exception
    # an empty prompt: the captioning preset without its image
    at = page(tiny_export)
    at.selectbox(key="preset").set_value("Captioning").run()
    at.selectbox(key="img_2_0").set_value("no image").run()
    assert _texts(at.error) == ["the prompt is empty: pick a preset, or add an image or some text to a turn"]
    assert not at.exception


def test_a_missing_or_broken_export_is_one_message(page, tmp_path):
    at = page(tmp_path / "nowhere")
    assert len(at.error) == 1 and "no frozen_config.json there" in at.error[0].value and not at.exception
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "frozen_config.json").write_text(json.dumps({"format": "something else"}))
    at = page(broken)
    assert len(at.error) == 1 and at.error[0].value.startswith("could not load the model: FrozenConfigError:")
    assert not at.exception
