"""Training: the loop (``loop.train``, one sectioned function), the one optimizer step it and the
benchmark share (``step``), resume checkpoints (``checkpoint``), process groups (``dist``), the
frozen LM sharded with FSDP2 under ``trainer.strategy=fsdp`` (``fsdp``) and rank-0 logging to
console and W&B (``logging``).

May import: ``frozen.config``, ``frozen.errors``, ``frozen.model``, ``frozen.data``. Never ``frozen.eval``.
"""
