"""The README's Python usage example runs as written (against the offline SmolLM2)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _usage_block() -> str:
    text = README.read_text()
    section = text.split("## Python usage", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python usage section has no python code block"
    return match.group(1)


def test_readme_usage_example_runs(smollm2_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # it writes outputs/my_frozen
    namespace: dict = {}
    exec(compile(_usage_block(), str(README), "exec"), namespace)
    frozen, restored, img = namespace["frozen"], namespace["restored"], namespace["img"]
    assert namespace["output"].logits.shape[:2] == (2, 2 + namespace["tokens"].input_ids.shape[1])
    assert len(namespace["answers"]) == 2 and all(isinstance(a, str) for a in namespace["answers"])
    assert (tmp_path / "outputs" / "my_frozen" / "model.safetensors").is_file()
    for name, tensor in frozen.trainable_state_dict().items():
        assert (restored.trainable_state_dict()[name] == tensor).all()
    full = frozen.generate([[img[0], img[1], img[1]], [img[0], img[1], img[0]]],
                           [namespace["support"] + "<image>Q: What is this? A: This is a"] * 2,
                           max_new_tokens=3, stop_strings=["\n"])
    assert namespace["shared"] == full
