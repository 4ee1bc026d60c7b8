"""One W&B run per training run: a resumed run continues its W&B run and step axis, no step logged twice.

Read back from what W&B's offline mode wrote: each start of the run is an ``offline-run-*-<id>`` folder
whose ``.wandb`` file holds the records (protobuf, in W&B's LevelDB-log framing) that ``wandb sync``
uploads into the run of that id.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

from trainkit import losses, make_cfg, resume_run

from frozen.config import LoggerConfig

BLOCK, HEADER = 32768, 7  # W&B's .wandb framing: LevelDB log blocks, a 7-byte header per record chunk


def wandb_records(path: Path) -> list[bytes]:
    """The records of a .wandb file (wandb 0.31 has no Python reader: its writer is the Go core)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", "a W&B data file"
    pos, records, parts = HEADER, [], b""  # the file header (ident, magic, version) is 7 bytes too
    while pos + HEADER <= len(data):
        space = BLOCK - pos % BLOCK
        if space < HEADER:  # the rest of a block too small for a header is padding
            pos += space
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0:  # zero padding at a block's end
            pos += space
            continue
        parts += data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # FULL or LAST chunk: a record is complete
            records.append(parts)
            parts = b""
    return records


def history_steps(run_folder: Path) -> tuple[str, list[int]]:
    """(run id, the steps of its history records) of one offline run folder."""
    from wandb.proto import wandb_internal_pb2 as pb

    (data,) = run_folder.glob("*.wandb")
    run_id, steps = None, []
    for raw in wandb_records(data):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id
        elif kind == "history":
            steps.append(record.history.step.num)
    return run_id, steps


def test_a_resumed_run_continues_its_wandb_run_and_step_axis(tmp_path, caption_data, tiny_gpt2, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg(tmp_path / "run", caption_data, tiny_gpt2, max_steps=8)
    cfg = dataclasses.replace(cfg, logger=LoggerConfig(backend="wandb", project="frozen-test"))
    # Stopped after step 5 with its newest checkpoint at step 3: the restart trains 4 and 5 again.
    resume_run(cfg, kill_after=5, ckpt_at=3, total=8)
    import wandb

    wandb.teardown()  # W&B's service process writes .wandb files on its own time: let it finish (process exit does)
    run_id = (tmp_path / "run" / "wandb_run_id.txt").read_text().strip()
    # offline-run-<time>-<id>; W&B appends "-1" to the second folder when both starts fall in the same second.
    folders = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(f"-{run_id}" in f.name for f in folders), folders
    (id_a, first), (id_b, second) = [history_steps(f) for f in folders]
    assert id_a == id_b == run_id, "the restart continues the same W&B run"
    assert first == [1, 2, 3, 4, 5]
    assert second == [6, 7, 8], "steps 4 and 5, trained again, are not logged twice"
    assert sorted(losses(tmp_path / "run")) == list(range(1, 9)), "metrics.jsonl keeps every step"


def test_each_run_directory_is_its_own_wandb_run(tmp_path, caption_data, tiny_gpt2, monkeypatch):
    from frozen.train.loop import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    ids = []
    for name in ("a", "b"):
        cfg = make_cfg(tmp_path / name, caption_data, tiny_gpt2, max_steps=1)
        train(dataclasses.replace(cfg, logger=LoggerConfig(backend="wandb", project="frozen-test")))
        ids.append((tmp_path / name / "wandb_run_id.txt").read_text().strip())
    assert ids[0] != ids[1] and all(len(i) >= 8 for i in ids)
