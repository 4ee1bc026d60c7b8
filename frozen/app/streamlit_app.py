"""The few-shot app's page (``make app``): UI only; everything else is in :mod:`frozen.app.logic`.

Run: ``streamlit run frozen/app/streamlit_app.py -- --load PATH`` (``scripts/app.py`` does it on
127.0.0.1 and prints the address). ``FROZEN_APP_LOAD`` is read when ``--load`` is absent (tests).
"""

from __future__ import annotations

import argparse
import os
import sys

import pandas as pd
import streamlit as st

from frozen.app import logic as L
from frozen.model.frozen_model import FrozenModel

UPLOAD, NO_IMAGE = "upload a file…", "no image"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make app ARGS=...", description="Frozen's interactive few-shot app",
                                     allow_abbrev=False)
    parser.add_argument("--load", default=os.environ.get("FROZEN_APP_LOAD"),
                        help="an export, a training run directory or a hub repo id (default: the demo's model)")
    return parser.parse_known_args(argv)[0]


@st.cache_resource(show_spinner="Loading the model (once per process)…")
def load_model(path: str):
    return FrozenModel.from_pretrained(path).eval()


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


# ------------------------------------------------------------------------------------------ state
def apply_preset() -> None:
    """Fill the editor from the sidebar's preset, query image and episode (a widget callback)."""
    name = st.session_state.preset
    label = st.session_state.query
    st.session_state.turns = L.preset_turns(name, dict(L.gallery())[label], label, int(st.session_state.episode))
    for key, value in L.preset_settings(name).items():
        st.session_state[key] = value if key != "stop" else L.show_stop(value)
    st.session_state.version += 1  # new widget keys: the editor's widgets take the preset's values
    st.session_state.pop("result", None)


def edit_turns(change) -> None:
    change(st.session_state.turns)
    st.session_state.version += 1
    st.session_state.pop("result", None)


# ------------------------------------------------------------------------------------------ page parts
def sidebar() -> dict:
    sb = st.sidebar
    sb.header("Presets")
    sb.selectbox("Preset", L.PRESETS, key="preset", on_change=apply_preset)
    sb.selectbox("Query image (easy-VQA test set)", [label for label, _ in L.gallery()], key="query",
                 on_change=apply_preset)
    sb.number_input("Binding episode / VQA demonstration seed", 0, 999, key="episode", on_change=apply_preset)
    sb.button("Refill the editor", on_click=apply_preset, key="refill")
    sb.header("Decoding")
    decoding = sb.radio("Search", ["greedy", "beam search"], key="decoding", horizontal=True)
    beams = sb.number_input("Beams", 2, 8, 3, key="beams") if decoding == "beam search" else 1
    max_new = sb.number_input("Max new tokens", 1, 64, key="max_new_tokens")
    stop = sb.text_input("Stop string (\\n = newline; empty = none)", key="stop")
    blind = sb.toggle("What does the image change? (no-image run + next-token probabilities)", True, key="blind")
    return {"num_beams": int(beams), "max_new_tokens": int(max_new), "stop": L.parse_stop(stop),
            "blind": blind}


def editor() -> tuple[list[L.Turn], list[str]]:
    """One row per turn: an image (none, the preset's, a gallery image, an upload) and a text."""
    gallery = dict(L.gallery())
    turns, errors, v = [], [], st.session_state.version
    for i, stored in enumerate(st.session_state.turns):
        img_col, text_col, del_col = st.columns([2, 5, 1], vertical_alignment="top")
        own = [stored.label or "preset image"] if stored.image is not None and stored.label not in gallery else []
        options = [NO_IMAGE, *own, *gallery, UPLOAD]
        default = (stored.label or "preset image") if stored.image is not None else NO_IMAGE
        choice = img_col.selectbox(f"Turn {i + 1} image", options, options.index(default), key=f"img_{v}_{i}")
        turn = L.Turn(text_col.text_area(f"Turn {i + 1} text", stored.text, height=68, key=f"text_{v}_{i}"))
        if choice == UPLOAD:
            upload = img_col.file_uploader(f"Turn {i + 1} file", key=f"up_{v}_{i}", label_visibility="collapsed")
            if upload is None:
                img_col.caption("no file yet: this turn has no image")
            else:
                try:
                    turn.image, turn.label = L.read_upload(upload.name, upload.getvalue()), upload.name
                except L.AppInputError as err:
                    errors.append(f"turn {i + 1}: {err}")
        elif choice in own:
            turn.image, turn.label = stored.image, stored.label
        elif choice != NO_IMAGE:
            turn.image, turn.label = L.load_image(gallery[choice]), choice
        if turn.image is not None:
            img_col.image(turn.image, width=72)
        del_col.button("✕", key=f"del_{v}_{i}", help="remove this turn",
                       on_click=edit_turns, args=(lambda ts, i=i: ts.pop(i),))
        turns.append(turn)
    st.button("Add a turn", key="add", on_click=edit_turns, args=(lambda ts: ts.append(L.Turn()),))
    st.session_state.turns = turns  # edits survive adding/removing turns
    return turns, errors


def show_prompt(model, prompt: str, images: list) -> None:
    text_tokens, image_tokens = L.token_counts(model, prompt, len(images))
    st.subheader("The prompt as the model sees it")
    st.code(prompt, language=None)
    st.caption(f"{text_tokens} text tokens + {len(images)} image(s) × k={model.num_prefix_tokens} prefix embeddings "
               f"= {text_tokens + image_tokens} positions")
    pieces = L.prompt_pieces(prompt, images)
    for start in range(0, len(pieces), 8):
        row = pieces[start:start + 8]
        # Widths follow the content: an image slot is one unit, text about one unit per 15 characters.
        widths = [max(1.0, len(p) / 15) if isinstance(p, str) else 1.0 for p in row]
        for col, piece in zip(st.columns(widths), row):
            if isinstance(piece, str):
                col.markdown(f"`{piece!r}`")
            else:
                col.image(piece, caption="<image>", width=64)


def show_result(model, result: dict) -> None:
    left, right = st.columns(2)
    left.markdown("**With the images**")
    left.success(f"Answer: {result['answer']!r}")
    left.caption(f"{result['seconds'] * 1000:.0f} ms")
    if "blind_answer" not in result:
        return
    right.markdown("**No image: the same prompt, images removed**")
    right.info(f"Answer: {result['blind_answer']!r}")
    right.caption(f"{result['blind_seconds'] * 1000:.0f} ms · prompt {result['blind_prompt']!r}")
    st.subheader("Next-token probabilities at the first answer step")
    table = pd.DataFrame(result["top"])
    st.bar_chart(table, x="token", y=["image", "no image"], stack=False, horizontal=True, sort=False,
                 x_label="next token", y_label="probability")  # horizontal: x names the bars
    st.dataframe(table, hide_index=True)


def run(settings: dict, model, prompt: str, images: list) -> dict:
    answer, seconds = L.generate(model, prompt, images, num_beams=settings["num_beams"],
                                 max_new_tokens=settings["max_new_tokens"], stop=settings["stop"])
    result = {"prompt": prompt, "answer": answer, "seconds": seconds}
    if settings["blind"]:
        blind = L.blind_prompt(prompt, model.tokenizer)
        result["blind_answer"], result["blind_seconds"] = L.generate(
            model, blind, [], num_beams=settings["num_beams"], max_new_tokens=settings["max_new_tokens"],
            stop=settings["stop"])
        result["blind_prompt"] = blind
        result["top"] = L.compare_top(model.tokenizer, L.next_token_probs(model, prompt, images),
                                      L.next_token_probs(model, blind, []))
    return result


def main() -> None:
    st.set_page_config(page_title="Frozen: few-shot with a frozen LM", layout="wide")
    st.title("Frozen: multimodal few-shot with a frozen language model")
    try:
        path = L.resolve_load(parse_args(sys.argv[1:]).load)
        model = load_model(path)
    except L.AppInputError as err:
        st.error(str(err))
        return
    except Exception as err:  # a broken export or a missing LM: one line, not a traceback
        st.error(f"could not load the model: {first_line(err)}")
        return
    cfg = model.model_cfg
    st.caption(f"`{path}` · LM `{model.lm_cfg.name}` (frozen) · {cfg.vision} at {cfg.image_size} px · k = "
               f"{cfg.num_prefix_tokens}")
    if "turns" not in st.session_state:
        st.session_state.update(version=0, preset=L.PRESETS[1], query=L.gallery()[0][0], episode=0)
        apply_preset()
    settings = sidebar()
    st.subheader("Interleaved prompt")
    turns, errors = editor()
    for message in errors:
        st.error(message)
    try:
        prompt, images = L.assemble(turns)
    except L.AppInputError as err:
        st.error(str(err))
        return
    show_prompt(model, prompt, images)
    if st.button("Generate", type="primary", key="generate", disabled=bool(errors)):
        with st.spinner("Generating…"):
            try:
                st.session_state.result = run(settings, model, prompt, images)
            except Exception as err:  # e.g. a prompt longer than the LM's context: one line
                st.session_state.pop("result", None)
                st.error(f"generation failed: {first_line(err)}")
    if st.session_state.get("result", {}).get("prompt") == prompt:  # not a stale answer to another prompt
        show_result(model, st.session_state.result)


# Streamlit runs this file as __main__; the guard keeps a multiprocessing child that re-imports the
# main module (spawn) from running the page.
if __name__ == "__main__":
    main()
