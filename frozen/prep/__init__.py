"""Data preparation: converters from public data-set files to WebDataset shards.

Only ``scripts/make_shards.py`` uses this package. ``shards`` writes tar shards and counts what it
skips; the converters read COCO / Karpathy, VQAv2 / OK-VQA, caption tables, easy-VQA.
May import: ``frozen.errors``, ``frozen.data.samples`` (the same byte checks the reader applies).
Modules: ``inputs`` (every input file: path checks, public JSON schemas, tables), ``shards`` (writer,
report), ``convert`` (shared job writing and accounting), ``coco``, ``vqa``, ``tables``, ``easyvqa``.
"""
