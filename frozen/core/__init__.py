"""The shared layer: what several packages use, owned once.

``dist`` (process group and rank facts), ``precision`` (the precision rule and autocast), ``logging``
(the rank-0 console and run logger), ``results`` (the results tables and their "setting" label),
``tiny`` (the random offline LMs of tests, the bench and ``make tiny-lm``), ``conf`` (where the YAML presets
are), ``text`` (the UTF-8 check of every text boundary), ``files`` (a file's sha256, the atomic write). It
may import only the standard library, third-party packages and ``frozen.errors``: every other package may
import it, it imports none of them.
"""
