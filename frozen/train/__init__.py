"""Training: the loop (``loop.train``, one sectioned function: setup, resume, steps, export), the one
optimizer step it and the benchmark share (``step``), where a run starts and whether a checkpoint
may continue it (``resume``), what a resume checkpoint holds and how it is written and read back
(``checkpoint``), the validation pass (``validate``), the frozen LM sharded with FSDP2 under
``trainer.strategy=fsdp`` (``fsdp``), the step values the loop reads only on logging steps
(``records``) and the count of host reads per step (``hostsync``, docs/host_syncs.md).

May import: ``frozen.config``, ``frozen.errors``, ``frozen.core``, ``frozen.model``, ``frozen.data``.
Never ``frozen.eval``.
"""
