"""How projector replicas split the partition queues: each aims at an even share,
and each member slot starts its picks at a different partition."""

from __future__ import annotations


def fair_share(partitions: int, members: int) -> int:
    """How many partitions each of `members` replicas aims to own."""
    return -(-partitions // max(1, members))


def preference(partitions: int, slot: int, share: int) -> list[int]:
    """The order in which a member slot tries free partitions (spreads first picks)."""
    start = (slot * share) % partitions
    return [(start + i) % partitions for i in range(partitions)]
