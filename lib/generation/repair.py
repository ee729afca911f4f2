"""Repairing a generation folder before a rank resumes into it.

A rank does not trust the shards it finds: it runs :func:`lib.shards.verify` on its share
(the shards written by ranks ``r`` with ``r % world_size == rank``, so no two ranks touch
the same file and none touches a file another rank is writing), sets every damaged shard
aside (renamed ``*.damaged``, never deleted) and lets the resume generate its ids again.
Ids and seeds are deterministic and every pipeline call has the same shape
(:mod:`lib.generation.core`), so the regenerated images are byte for byte the ones lost.
What was repaired is counted (``repaired_shards``, ``repaired_ids``) and printed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lib.shards import set_aside, verify


def repair_damaged(
    out_dir: Path, rank: int = 0, world_size: int = 1, log: Callable[[str], None] = print
) -> dict[str, int]:
    """Set aside the damaged shards of ``rank``'s share of ``out_dir``; their ids are then no
    longer done, so the resume generates them again.

    Returns ``repaired_shards`` (shards set aside) and ``repaired_ids`` (ids they held,
    stored or dropped). Disagreements of the manifest alone are not repaired here: the
    manifest is rewritten from the shards once every id is done.
    """
    report = verify(out_dir, rank=rank, world_size=world_size)
    ids = 0
    for damage in report.damaged:
        moved = set_aside(out_dir, damage.shard)
        held = len(damage.ids) + len(damage.dropped)
        ids += held
        where = ", ".join(p.name for p in moved) or "nothing left to move"
        log(f"[generate rank {rank}] damaged shard {out_dir / damage.shard}: {damage.reason}. "
            f"Set aside ({where}); its {held} ids are generated again.")
    return {"repaired_shards": len(report.damaged), "repaired_ids": ids}
