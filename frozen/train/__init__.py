"""Training: the loop (``loop.train``, one sectioned function), resume checkpoints
(``checkpoint``), process groups (``dist``) and rank-0 logging to console and W&B (``logging``).

May import: ``frozen.config``, ``frozen.errors``, ``frozen.model``, ``frozen.data``. Never ``frozen.eval``.
"""
