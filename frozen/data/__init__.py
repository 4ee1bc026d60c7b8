"""The read pipeline: shard listing, sample parsing with bad-data accounting, collation.

``shards`` lists the tar files of a pattern under ``data_root``; ``samples`` turns tar members into
:class:`~frozen.data.samples.Example` (bad records counted by reason, never fatal); ``collate`` turns
examples into padded token batches; ``streams`` splits the samples over ranks and workers (exact
resume); ``pipeline`` builds the train/eval loaders, each given ``data_root``.
May import: ``frozen.config``, ``frozen.errors``, ``frozen.core``, ``frozen.model.vision`` (the image transform).
"""
