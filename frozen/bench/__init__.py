"""`make bench` (``python -m frozen.bench.cli``): the project's fast paths timed against the plain way of doing
the same work. ``cli`` parses and reports, ``common`` loads models and formats sides and targets, one module
per entry group (``train``, ``generation``, ``data``), ``lib`` the measuring helpers (also used by the demo,
the scaling plan and tests). It sits beside the entry points: it may import every other frozen package.

Entries (``--only`` picks some; see docs/bench.md for what each measures):

* ``train_step``: one optimizer step with the frozen LM (no LM weight gradients) vs the same model
  with the LM's weights left trainable but outside the optimizer; time, peak memory, FLOPs; also
  with activation checkpointing. On CUDA additionally tokens/s and MFU.
* ``fewshot_shared_support``: 25 queries on one 5-way 1-shot support set, support encoded once
  (``generate_shared``) vs the full prompt per query (``model.generate``); outputs must be identical.
* ``batched_generation``: 16 VQA prompts in one ``model.generate`` call vs one call per prompt.
* ``data_loader``: samples/s of the training pipeline alone vs samples/s the train step consumes.
* ``jpeg_decode``: images/s of one loader worker making 224-px batches from 640 x 480 JPEG shards, reduced-scale
  decode (``data.jpeg_draft``) vs full decode; and the loader workers per GPU docs/scaling.md's step rate needs.

Timings are medians of ``--repeats``; the two sides of an entry run interleaved, so load from other
processes hits both alike. Writes ``outputs/bench/bench.json`` and prints a table.
"""

