"""Where a client keeps its cursors `(topic, epoch, after_seq)` between runs.

A cursor is saved only after the state derived from its frame was applied, so
a stored cursor is never ahead of the data (that would lose frames); a cursor
behind the data causes harmless re-delivery, which the apply rule discards.
Every store here writes a cursor atomically: the file store replaces its file
with `os.replace`, the SQLite store commits each change (or joins the caller's
transaction on a shared connection, so state and cursor commit together).
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Cursor:
    """Every frame of `epoch` up to and including `after_seq` is applied."""

    epoch: str = ""
    after_seq: int = 0

    @property
    def fresh(self) -> bool:
        """A fresh subscription (snapshot or oldest retained frame)."""
        return self.after_seq == 0


class CursorStore(Protocol):
    """Persistence of per-topic cursors."""

    def load(self) -> dict[str, Cursor]:
        """Every stored cursor by topic."""
        ...

    def save(self, topic: str, cursor: Cursor) -> None:
        """Store the topic's cursor (atomically)."""
        ...

    def delete(self, topic: str) -> None:
        """Forget the topic's cursor (its local state was dropped)."""
        ...


class MemoryCursorStore:
    """Cursors in memory: for state that lives in memory too."""

    def __init__(self, initial: dict[str, Cursor] | None = None) -> None:
        self.cursors: dict[str, Cursor] = dict(initial or {})

    def load(self) -> dict[str, Cursor]:
        """Every stored cursor by topic."""
        return dict(self.cursors)

    def save(self, topic: str, cursor: Cursor) -> None:
        """Store the topic's cursor."""
        self.cursors[topic] = cursor

    def delete(self, topic: str) -> None:
        """Forget the topic's cursor."""
        self.cursors.pop(topic, None)


class FileCursorStore:
    """Cursors in one JSON file, replaced atomically on every change."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._cursors = self._read()

    def _read(self) -> dict[str, Cursor]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ValueError(f"cursor file {self.path} is unreadable: {exc}") from None
        cursors = data.get("cursors", {}) if isinstance(data, dict) else {}
        return {
            topic: Cursor(str(c.get("epoch", "")), int(c.get("after_seq", 0)))
            for topic, c in cursors.items()
            if isinstance(c, dict)
        }

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "version": 1,
            "cursors": {
                t: {"epoch": c.epoch, "after_seq": c.after_seq}
                for t, c in sorted(self._cursors.items())
            },
        }
        fd, tmp = tempfile.mkstemp(prefix=".cursors-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(body, out, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self) -> dict[str, Cursor]:
        """Every stored cursor by topic."""
        return dict(self._cursors)

    def save(self, topic: str, cursor: Cursor) -> None:
        """Store the topic's cursor and rewrite the file."""
        if self._cursors.get(topic) == cursor:
            return
        self._cursors[topic] = cursor
        self._write()

    def delete(self, topic: str) -> None:
        """Forget the topic's cursor."""
        if self._cursors.pop(topic, None) is not None:
            self._write()


class SqliteCursorStore:
    """Cursors in a SQLite table `khala_cursors`.

    Pass `connection` to share a database with the application's own state and
    `autocommit=False` to commit the cursor in the application's transaction.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        connection: sqlite3.Connection | None = None,
        autocommit: bool = True,
    ) -> None:
        if connection is None:
            if path is None:
                raise ValueError("SqliteCursorStore needs a path or a connection")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
        self.db = connection
        self.autocommit = autocommit
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS khala_cursors ("
            " topic TEXT PRIMARY KEY, epoch TEXT NOT NULL, after_seq INTEGER NOT NULL)"
        )
        self._commit()

    def _commit(self) -> None:
        if self.autocommit:
            self.db.commit()

    def load(self) -> dict[str, Cursor]:
        """Every stored cursor by topic."""
        rows = self.db.execute("SELECT topic, epoch, after_seq FROM khala_cursors").fetchall()
        return {topic: Cursor(epoch, int(seq)) for topic, epoch, seq in rows}

    def save(self, topic: str, cursor: Cursor) -> None:
        """Upsert the topic's cursor."""
        self.db.execute(
            "INSERT INTO khala_cursors (topic, epoch, after_seq) VALUES (?, ?, ?)"
            " ON CONFLICT(topic) DO UPDATE SET epoch = excluded.epoch, after_seq = excluded.after_seq",
            (topic, cursor.epoch, cursor.after_seq),
        )
        self._commit()

    def delete(self, topic: str) -> None:
        """Forget the topic's cursor."""
        self.db.execute("DELETE FROM khala_cursors WHERE topic = ?", (topic,))
        self._commit()

    def close(self) -> None:
        """Close the connection."""
        self.db.close()


def open_store(spec: str) -> CursorStore:
    """A store from a spec: `memory`, a `*.json` path, or a `*.sqlite`/`*.db` path."""
    if spec == "memory":
        return MemoryCursorStore()
    if spec.endswith((".sqlite", ".sqlite3", ".db")):
        return SqliteCursorStore(spec)
    return FileCursorStore(spec)
