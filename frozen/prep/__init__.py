"""Data preparation: converters from public data-set files to WebDataset shards.

Only ``scripts/make_shards.py`` uses this package. ``shards`` writes tar shards and counts what it
skips; ``convert`` reads COCO / VQAv2 / OK-VQA / caption tables; ``easyvqa`` builds the offline set.
May import: ``frozen.errors``, ``frozen.data.samples`` (the same byte checks the reader applies).
"""
