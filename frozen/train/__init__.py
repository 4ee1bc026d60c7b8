"""Training: the loop (``loop.train``, one sectioned function: setup, resume, steps, export), the one
optimizer step it and the benchmark share (``step``), where a run starts and whether a checkpoint
may continue it (``resume``), what a resume checkpoint holds and how it is written and read back
(``checkpoint``), the validation pass (``validate``) and the frozen LM sharded with FSDP2 under
``trainer.strategy=fsdp`` (``fsdp``).

May import: ``frozen.config``, ``frozen.errors``, ``frozen.core``, ``frozen.model``, ``frozen.data``.
Never ``frozen.eval``.
"""
