"""The advisory locks of partition ownership, held on one dedicated session.

A member lock (class "khlm", one slot per replica) marks a live replica; a
partition lock (class "khlp", key = partition) marks its owner. Both are
session-level: they last exactly as long as this connection, so a replica
whose connection dies (or that is killed) releases them all at once.
"""

from __future__ import annotations

import asyncio

import asyncpg

# pg_advisory_lock(int4, int4) class keys: "khlp" (partition k) and "khlm" (member slot).
PARTITION_LOCK_CLASS = 0x6B686C70
MEMBER_LOCK_CLASS = 0x6B686C6D
MAX_MEMBERS = 1024

_COUNT_MEMBERS = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid::bigint = $1
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


class PartitionLocks:
    """One session's member and partition locks."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @classmethod
    async def connect(cls, dsn: str) -> PartitionLocks:
        """Open the dedicated session (it holds no lock yet)."""
        conn: asyncpg.Connection = await asyncpg.connect(
            dsn, server_settings={"application_name": "khala-projector-partitions"}
        )
        return cls(conn)

    def is_closed(self) -> bool:
        """Whether the session is gone (and with it every lock it held)."""
        return bool(self._conn.is_closed())

    async def take_member_slot(self) -> int:
        """Lock the lowest free member slot and return it."""
        for slot in range(MAX_MEMBERS):
            if await self._conn.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)", MEMBER_LOCK_CLASS, slot
            ):
                return slot
        raise RuntimeError(f"more than {MAX_MEMBERS} projector replicas")

    async def count_members(self) -> int:
        """Replicas holding a member lock in this database (this one included)."""
        return int(await self._conn.fetchval(_COUNT_MEMBERS, MEMBER_LOCK_CLASS))

    async def try_lock(self, partition: int) -> bool:
        """Take `partition`'s lock if it is free."""
        return bool(
            await self._conn.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)", PARTITION_LOCK_CLASS, partition
            )
        )

    async def unlock(self, partition: int) -> None:
        """Release `partition`'s lock."""
        await self._conn.execute(
            "SELECT pg_advisory_unlock($1, $2)", PARTITION_LOCK_CLASS, partition
        )

    async def close(self, timeout_s: float = 2.0) -> None:
        """Close the session (releasing every lock); terminate it if closing stalls."""
        try:
            await asyncio.wait_for(self._conn.close(), timeout_s)
        except BaseException:
            self._conn.terminate()
