"""frozen.app.logic: model lookup, prompt assembly, presets, next-token probabilities (no UI)."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from frozen.app import logic as L


def _export(path):
    path.mkdir(parents=True)
    (path / "frozen_config.json").write_text("{}")
    return path


def test_resolve_load_prefers_the_vqa_demo_then_the_caption_demo(tmp_path):
    with pytest.raises(L.AppInputError, match=r"run `make demo` first, or pass --load PATH"):
        L.resolve_load(None, tmp_path)
    frozen = _export(tmp_path / "outputs/demo/frozen/export")
    assert L.resolve_load(None, tmp_path) == str(frozen)
    vqa = _export(tmp_path / "outputs/demo/frozen_vqa/export")
    assert L.resolve_load(None, tmp_path) == str(vqa)
    assert L.resolve_load(str(tmp_path / "outputs/demo/frozen"), tmp_path) == str(frozen)  # a run directory
    assert L.resolve_load("someone/frozen-demo", tmp_path) == "someone/frozen-demo"  # a hub id, resolved later
    with pytest.raises(L.AppInputError, match="no frozen_config.json there"):
        L.resolve_load(str(tmp_path / "outputs"), tmp_path)


def test_assemble_joins_turns_with_image_slots():
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    turns = [L.Turn("Answer with dax or blicket."), L.Turn("This is a dax.", red), L.Turn("Q: What is this? A:", blue)]
    prompt, images = L.assemble(turns)
    assert prompt == "Answer with dax or blicket.\n<image>This is a dax.\n<image>Q: What is this? A:"
    assert images == [red, blue]
    assert L.assemble([L.Turn("", red)]) == ("<image>", [red])  # captioning: the image alone
    assert L.prompt_pieces(prompt, images) == ["Answer with dax or blicket.\n", red, "This is a dax.\n", blue,
                                               "Q: What is this? A:"]


def test_assemble_rejects_an_empty_prompt_and_typed_markers():
    with pytest.raises(L.AppInputError, match="the prompt is empty"):
        L.assemble([L.Turn("  "), L.Turn("")])
    img = Image.new("RGB", (8, 8))
    with pytest.raises(L.AppInputError, match=r"2 <image> markers but 1 images: remove the <image> typed in turn 2"):
        L.assemble([L.Turn("a", img), L.Turn("<image> b")])


def test_read_upload_accepts_images_and_names_other_files():
    buf = io.BytesIO()
    Image.new("L", (5, 4), 128).save(buf, format="PNG")
    img = L.read_upload("grey.png", buf.getvalue())
    assert img.mode == "RGB" and img.size == (5, 4) and img.getpixel((0, 0)) == (128, 128, 128)
    with pytest.raises(L.AppInputError, match="notes.txt is not an image"):
        L.read_upload("notes.txt", b"hello")
    with pytest.raises(L.AppInputError, match="cut.png is not an image"):
        L.read_upload("cut.png", buf.getvalue()[:40])  # a truncated PNG


def test_presets_use_the_evaluation_formats():
    label, path = L.gallery()[0]
    assert label == "test #0: red triangle"  # easy-VQA test image 0, read off its questions
    caption = L.preset_turns("Captioning", path, label)
    assert L.assemble(caption)[0] == "<image>" and caption[0].label == label
    for shots in (0, 1, 4):
        turns = L.preset_turns(f"VQA {shots}-shot", path, label)
        prompt, images = L.assemble(turns)
        assert len(turns) == len(images) == shots + 1
        # conf/eval/demo.yaml: "Q: {question} A:" + " {answer}" per demonstration, "\n" between
        assert prompt.endswith("<image>Q: what is the red shape? A:")  # the first test question on image 0
        assert all(t.text.startswith("Q: ") and not t.text.endswith("A:") for t in turns[:-1])
        assert all(t.label.startswith("train #") for t in turns[:-1])
    reseeded = L.preset_turns("VQA 4-shot", path, label, seed=1)
    assert reseeded[0].text != L.preset_turns("VQA 4-shot", path, label)[0].text
    plain = L.assemble(L.preset_turns("Fast binding 2-way", path, label))[0].split("\n")
    induced = L.assemble(L.preset_turns("Fast binding 2-way + task induction", path, label))[0].split("\n")
    assert induced == ["Answer with dax or blicket.", *plain]
    assert sorted(plain[:2]) == ["<image>This is a blicket.", "<image>This is a dax."]
    assert plain[2] == "<image>Q: What is this? A: This is a"
    with pytest.raises(L.AppInputError, match="unknown preset 'VQA'"):
        L.preset_turns("VQA", path, label)


def test_blind_prompt_drops_images_and_starts_an_image_only_prompt_from_eos(export_model):
    tok = export_model.tokenizer
    assert L.blind_prompt("<image>This is a dax.\n<image>Q: A:", tok) == "This is a dax.\nQ: A:"
    assert L.blind_prompt("<image>", tok) == "<|endoftext|>"  # the tiny tokenizer's BOS = EOS


def test_token_counts(export_model):
    n_text = len(export_model.tokenizer("Q: a", add_special_tokens=False).input_ids)
    assert L.token_counts(export_model, "<image>Q: a", 1) == (n_text, 2)  # k = 2 per image


def test_next_token_probs_equal_the_models_own_forward(export_model):
    """``<image>text`` through next_token_probs == softmax of FrozenModel.forward's last logits."""
    torch.manual_seed(0)
    img = Image.fromarray((torch.rand(32, 32, 3) * 255).byte().numpy())
    ids = export_model.tokenizer("Q: what color is the shape? A:", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = export_model(export_model.preprocess(img)[None], ids).logits[0, -1]
    probs = L.next_token_probs(export_model, "<image>Q: what color is the shape? A:", [img])
    assert probs.shape == (len(export_model.tokenizer),) and abs(float(probs.sum()) - 1) < 1e-5
    torch.testing.assert_close(probs, torch.softmax(logits, -1), atol=1e-6, rtol=1e-5)
    blind = L.next_token_probs(export_model, "Q: what color is the shape? A:", [])
    assert not torch.allclose(probs, blind)  # the image changes what the LM believes


def test_compare_top_ranks_by_either_condition():
    class Tok:
        def decode(self, ids):
            return {0: "a", 1: " b", 2: "a"}[ids[0]]

    rows = L.compare_top(Tok(), torch.tensor([0.5, 0.1, 0.4]), torch.tensor([0.1, 0.8, 0.1]), top=3)
    assert [r["id"] for r in rows] == [1, 0, 2]  # max over conditions: 0.8, 0.5, 0.4
    assert [r["token"] for r in rows] == ["' b'", "'a' #0", "'a' #2"]  # same text: ids keep labels distinct
    assert rows[0]["image"] == pytest.approx(0.1) and rows[0]["no image"] == pytest.approx(0.8)


def test_stop_string_escapes():
    assert L.parse_stop("\\n") == "\n" and L.parse_stop("A:\\t") == "A:\t"
    assert L.parse_stop("\\") == "\\" and L.parse_stop("é.") == "é."  # no other escapes, no crash
    assert L.show_stop("\n") == "\\n" and L.parse_stop(L.show_stop("x\ny")) == "x\ny"
