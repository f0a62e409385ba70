"""The CLI's config file: service URLs, default org and the signed-in session.

Lives in `$KHALA_CONFIG_DIR` or `~/.config/khala` as `config.json` (mode 0600,
it holds a refresh token), replaced atomically on every change; refresh tokens
rotate, so the newest one is written before it is used again.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from khala_client.api import Session

DEFAULT_CONTROL = "http://127.0.0.1:8081"
DEFAULT_RUNTIME = "http://127.0.0.1:8082"
DEFAULT_GATEWAY = "ws://127.0.0.1:8084/v1/ws"


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$KHALA_CONFIG_DIR`, else `$XDG_CONFIG_HOME/khala`, else `~/.config/khala`."""
    env = os.environ if environ is None else environ
    if env.get("KHALA_CONFIG_DIR"):
        return Path(env["KHALA_CONFIG_DIR"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "khala"


@dataclass
class Config:
    """Everything `khala` remembers between invocations."""

    control_url: str = DEFAULT_CONTROL
    runtime_url: str = DEFAULT_RUNTIME
    gateway_url: str = DEFAULT_GATEWAY
    org: str = ""
    surface: str = "desktop"
    client_version: str = "1.0.0"
    device_id: str = field(default_factory=lambda: f"cli-{uuid.uuid4().hex[:12]}")
    session: dict[str, Any] | None = None
    path: Path = field(default=Path("config.json"), repr=False)

    @classmethod
    def load(cls, directory: Path) -> Config:
        """Read the config (defaults when the file does not exist)."""
        path = directory / "config.json"
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return cls(path=path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a JSON object")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "path"}
        return cls(**known, path=path)

    def save(self) -> None:
        """Write the config atomically, readable by the owner only."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {k: v for k, v in asdict(self).items() if k != "path"}
        fd, tmp = tempfile.mkstemp(prefix=".config-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(body, out, indent=2)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_session(self) -> Session | None:
        """The stored session, if signed in."""
        return Session.from_dict(self.session) if self.session else None

    def set_session(self, session: Session | None) -> None:
        """Remember (or forget) the session and save at once."""
        self.session = session.to_dict() if session else None
        self.save()
