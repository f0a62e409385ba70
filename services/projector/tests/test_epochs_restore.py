"""Integration: epochs are not reused after a backup restore.

A restore rewinds rows and sequences. Before, a rebuild's epoch was
`rebuild_id + 1` from a bigserial, so a rebuild after a restore could mint an
epoch value a client had already seen for a different history, and the
client's old cursor would resume into it. Here the restore is simulated the
way it acts on the database: the rows written after the "backup" go away and
the sequence is set back.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from khala_projector.domain.projection import Projection
from khala_projector.domain.rebuild import RebuildScope
from khala_projector.storage.rebuild_store import RebuildStore

pytestmark = pytest.mark.integration

_SEQ = "pg_get_serial_sequence('rebuilds', 'rebuild_id')"


async def _seq_name(pool: asyncpg.Pool) -> str:
    name = await pool.fetchval(f"SELECT {_SEQ}")
    assert isinstance(name, str)
    return name


async def test_a_rebuild_after_a_restore_gets_a_new_epoch(khala_pool: asyncpg.Pool) -> None:
    store = RebuildStore(khala_pool)
    scope = RebuildScope(Projection.WORKERS, f"epochs{uuid.uuid4().hex[:8]}")
    seq_name = await _seq_name(khala_pool)
    backup_point = await khala_pool.fetchrow(f"SELECT last_value, is_called FROM {seq_name}")
    before = await store.create(scope)
    # Restore to the backup point: the rebuild row is gone, the sequence rewinds.
    await khala_pool.execute("DELETE FROM rebuilds WHERE rebuild_id = $1", before.rebuild_id)
    await khala_pool.execute(f"SELECT setval({_SEQ}, $1, $2)", *backup_point)
    after = await store.create(scope)
    try:
        assert after.rebuild_id == before.rebuild_id  # the sequence did rewind
        assert after.epoch != before.epoch
    finally:
        await khala_pool.execute("DELETE FROM rebuilds WHERE rebuild_id = $1", after.rebuild_id)
