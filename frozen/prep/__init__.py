"""Data preparation: converters from public data-set files to WebDataset shards.

Only ``scripts/make_shards.py`` uses this package. The converters read COCO / Karpathy, VQAv2 /
OK-VQA, caption tables and easy-VQA.
May import: ``frozen.errors``, ``frozen.core``, ``frozen.data.samples`` (the same byte checks the reader
applies).
Modules: ``inputs`` (every input file: path checks, public JSON schemas, tables), ``shards``
(writer), ``report`` (the account of every record), ``convert`` (shared job writing and
accounting), ``coco``, ``vqa``, ``tables``, ``easyvqa``.
"""
