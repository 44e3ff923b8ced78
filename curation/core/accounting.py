"""Rows out == rows in: what every stage checks before it writes its index.

A stage counts the rows it reads, and per output shard the rows assigned to it right after the read
(before anything can be dropped). The shard writers report the rows they got. Any shard whose
writer got another number than was assigned to it, or a total that differs from the rows read, is
`RowsLost`: the index is not written and the short shards lose their progress markers, so a rerun
writes them again instead of skipping them forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class RowsLost(RuntimeError):
    """The shard writers got fewer (or more) rows than the stage read: the index is not written."""


class ShardStateError(RuntimeError):
    """A shard's progress marker and its report disagree (one without the other)."""


@dataclass
class RowAccount:
    """One stage's rows: read in total, assigned per shard, got per shard by the writers (this run's
    reports and the reports of shards an earlier run finished). Where decisions travel to the
    writers beside the rows (dedup, plan), the elements of each shard this run wrote are checked too:
    rows plus decisions assigned against what its writer got."""

    stage: str
    output: str
    rows_read: int | None
    assigned: dict[str, int] | None  # shard name -> rows assigned to it after the read
    got: dict[str, int] = field(default_factory=dict)  # shard name -> rows its writer got
    decisions: dict[str, int] = field(default_factory=dict)  # shard name -> decisions keyed to it
    elements_got: dict[str, int] = field(default_factory=dict)  # this run's shards: rows + decisions got

    def short_shards(self) -> dict[str, str]:
        """shard name -> what it lacks, for every shard whose writer got another number of rows (or
        of rows and decisions) than were assigned to it."""
        out = {}
        if self.assigned is not None:
            for name in sorted(set(self.assigned) | set(self.got)):
                want, have = self.assigned.get(name, 0), self.got.get(name, 0)
                if want != have:
                    out[name] = f"expected {want} got {have}"
        for name in sorted(self.elements_got if self.assigned is not None else ()):
            want = self.assigned.get(name, 0) + self.decisions.get(name, 0)  # type: ignore[union-attr]
            have = self.elements_got[name]
            if name not in out and want != have:
                out[name] = f"expected {want} rows and decisions got {have}"
        return out

    def totals(self) -> dict[str, int]:
        out = {"rows_written": sum(self.got.values())}
        if self.rows_read is not None:
            out["rows_read"] = self.rows_read
        if self.assigned is not None:
            out["rows_assigned"] = sum(self.assigned.values())
        return out

    def problem(self) -> str | None:
        """Why the index must not be written, or None when every row read reached a writer."""
        short = self.short_shards()
        totals = self.totals()
        read = totals.get("rows_read", totals.get("rows_assigned"))
        if not short and (read is None or read == totals["rows_written"]):
            return None
        shown = ", ".join(f"{name} {what}" for name, what in list(short.items())[:10])
        more = f" and {len(short) - 10} more" if len(short) > 10 else ""
        read_text = f"{read} rows read, " if read is not None else ""
        return (f"{self.stage}: {self.output}: {read_text}{totals.get('rows_assigned', '?')} assigned to shards, "
                f"{totals['rows_written']} reached the shard writers"
                + (f"; short shards: {shown}{more}" if short else " (lost before the shards were assigned)")
                + ". No index written; the short shards' progress markers are removed, so a rerun of the same "
                  "command writes them again.")

    def redo(self, this_run: set[str]) -> list[str]:
        """Shards a rerun must write again: the short ones, or every shard this run wrote when the
        rows went missing before they were assigned (no shard can be named)."""
        short = self.short_shards()
        return sorted(short) if short else sorted(this_run)
