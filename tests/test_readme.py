"""The README's Python usage example runs as written (against the offline SmolLM2); its make targets are listed
by `make help`; the configuration table lists every preset. Links, presets and commands of README.md and
docs/*.md: tests/test_docs.py."""

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


# ------------------------------------------------------------------------------------------ commands
REPO = README.parent


def _code_lines(prefixes: tuple[str, ...]) -> list[str]:
    """Command lines of the README's bash blocks starting with one of ``prefixes`` (comments dropped)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith(prefixes):
                lines.append(line)
    return lines


def test_config_table_lists_every_preset():
    """docs/training.md's configuration table (linked from the README) names every preset file of conf/."""
    text = (REPO / "docs" / "training.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for group in ("model", "lm", "data", "trainer", "logger", "experiment"):
        row = re.search(rf"^\| `{group}` \| (.*?) \|", text, re.M)
        assert row, f"no row for {group} in docs/training.md's configuration table"
        listed = set(re.findall(r"`([a-z0-9_]+)`", row.group(1)))
        assert listed == {p.stem for p in (REPO / "conf" / group).glob("*.yaml")}, group


def test_readme_make_targets_exist():
    import subprocess

    help_text = subprocess.run(["make", "-s", "-o", ".venv/.installed", "help"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout
    listed = set(re.findall(r"^\s+(?:\x1b\[36m)?([a-z][a-z0-9_-]*)", help_text, re.M))
    mentioned = set(re.findall(r"`make ([a-z][a-z0-9_-]*)", README.read_text()))
    mentioned |= {line.split()[1] for line in _code_lines(("make ",))}
    assert mentioned and mentioned <= listed, mentioned - listed
