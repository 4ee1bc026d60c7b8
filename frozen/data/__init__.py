"""The read pipeline: shard listing, sample parsing with bad-data accounting, collation.

``samples`` turns tar members into :class:`~frozen.data.samples.Example` (bad records counted by
reason, never fatal), ``collate`` turns examples into padded token batches, ``pipeline`` builds the
train/eval DataLoaders with rank/worker splitting and exact resume.
May import: ``frozen.config``, ``frozen.errors``, ``frozen.core``, ``frozen.model.vision`` (the image transform).
"""
