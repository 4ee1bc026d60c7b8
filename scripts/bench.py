"""`make bench`: the project's fast paths timed against the plain way of doing the same work.

The entries, their arguments and the report live in ``frozen.bench`` (``python -m frozen.bench.cli --help``);
docs/bench.md says what each entry measures.
"""

from __future__ import annotations

from frozen.bench.cli import main

if __name__ == "__main__":
    main()
