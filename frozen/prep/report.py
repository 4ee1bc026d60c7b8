"""What a conversion did with every input record: written to a shard, or skipped under a named reason.

:class:`ConvertReport` is the converters' account: the summary line, per-reason details with the
first offending items and the likely cause, and the rule that makes a run count as failed. Records
of a larger companion file that no input uses (the annotations of questions left out of a subset)
are counted apart, as unused: they are not inputs and never fail a run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from frozen.prep.shards import ShardSink, shard_pattern

# Skip reasons that are the user's choice (--limit, --split), not data lost.
REQUESTED_REASONS = ("beyond_limit", "other_split")
MAX_EXAMPLES = 3  # offending items kept per skip reason, for the summary


@dataclass
class ConvertReport:
    """What a converter did with every input record: written to a shard, or skipped under a reason.

    ``inputs`` counts the records read (the unit is the converter's: captions, images, questions,
    table rows; see docs/data.md), so ``written() + sum(skipped.values()) == inputs``. ``unused``
    counts, per reason, records of a companion file that no input refers to (not inputs, not lost).
    ``examples`` keeps the first few offending items per reason (paths, record descriptions) and
    ``hints`` the converter's likely cause, both for :meth:`failure` and the summary.
    """

    out_dir: str
    shards: dict[str, dict[str, int]] = field(default_factory=dict)  # prefix -> {shard name: samples}
    skipped: Counter = field(default_factory=Counter)
    unused: Counter = field(default_factory=Counter)
    inputs: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)
    hints: dict[str, str] = field(default_factory=dict)

    def add_sink(self, sink: ShardSink) -> None:
        self.shards[sink.prefix] = sink.close()

    def skip(self, reason: str, example: str | None = None, count: int = 1) -> None:
        """Count ``count`` input records as skipped for ``reason`` (they are inputs too)."""
        if count <= 0:
            return
        self.skipped[reason] += count
        self.inputs += count
        self._example(reason, example)

    def unuse(self, reason: str, example: str | None = None) -> None:
        """Count one record of a companion file as unused for ``reason`` (not an input, not lost)."""
        self.unused[reason] += 1
        self._example(reason, example)

    def _example(self, reason: str, example: str | None) -> None:
        first = self.examples.setdefault(reason, [])
        if example is not None and example not in first and len(first) < MAX_EXAMPLES:
            first.append(example)

    def written(self, prefix: str | None = None) -> int:
        groups = [self.shards[prefix]] if prefix is not None else self.shards.values()
        return sum(sum(g.values()) for g in groups)

    def patterns(self) -> dict[str, str | None]:
        return {prefix: shard_pattern(prefix, len(s)) for prefix, s in self.shards.items()}

    def lost(self) -> int:
        """Records skipped for a reason other than the user's choice (``--limit``, ``--split``)."""
        return sum(n for reason, n in self.skipped.items() if reason not in REQUESTED_REASONS)

    def summary(self) -> str:
        """``written N; skipped M (reason: count, ...)``, then ``; unused U (reason: count)`` if any."""
        def counts(counter: Counter) -> str:
            return f"{sum(counter.values())} ({', '.join(f'{k}: {v}' for k, v in sorted(counter.items())) or 'none'})"

        unused = f"; unused {counts(self.unused)}" if self.unused else ""
        return f"written {self.written()}; skipped {counts(self.skipped)}{unused}"

    def detail(self, reason: str) -> str:
        """``reason: count, first: a, b, c -- likely cause``."""
        first = self.examples.get(reason)
        line = f"{reason}: {self.skipped[reason]}" + (f", first: {', '.join(first)}" if first else "")
        return line + (f" -- {self.hints[reason]}" if reason in self.hints else "")

    def details(self) -> list[str]:
        """One :meth:`detail` line per reason of lost records."""
        return [self.detail(r) for r in sorted(self.skipped) if r not in REQUESTED_REASONS]

    def main_cause(self) -> str | None:
        """The :meth:`detail` of the reason that lost the most records, or None."""
        lost = [(n, r) for r, n in self.skipped.items() if r not in REQUESTED_REASONS]
        return self.detail(max(lost)[1]) if lost else None

    def failure(self, max_skip_fraction: float) -> str | None:
        """Why this run counts as failed (nothing written, or more than ``max_skip_fraction`` of the
        records considered were lost), or None."""
        considered = self.written() + self.lost()
        if self.written() == 0:
            return f"wrote nothing: {self.lost()} of {considered} records skipped" if considered else (
                "wrote nothing: the input holds no records" + (" (all excluded by --limit/--split)"
                                                                if self.skipped else ""))
        if self.lost() > max_skip_fraction * considered:
            return (f"skipped {self.lost()} of {considered} records ({self.lost() / considered:.0%}), more than "
                    f"--max-skip-fraction {max_skip_fraction:g}; the shards written are kept")
        return None


__all__ = ["ConvertReport", "REQUESTED_REASONS", "MAX_EXAMPLES"]
