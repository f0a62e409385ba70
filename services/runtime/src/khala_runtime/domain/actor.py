"""Who did a write: the actor recorded with every event in the log.

A user acts through a session on a device with a client surface (all from the
verified access token); a service (a gRPC or tool caller) acts as itself. The
actor is stored in the `events.actor` column beside the event, not inside the
RuntimeEvent: the event goes to every subscriber of its topic, the session and
device ids only to the org's admins through the audit API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

from khala_runtime.domain.access import Principal

USER = "user"
SERVICE = "service"


@dataclass(frozen=True)
class Actor:
    """A user (with session, device and surface) or a service."""

    kind: str  # USER | SERVICE
    id: str  # user id, or the service's name
    session_id: str = ""
    device_id: str = ""
    surface: str = ""

    @cached_property
    def json(self) -> str:
        """The actor as the JSON object the log stores (computed once per actor)."""
        return json.dumps(
            {
                "kind": self.kind,
                "id": self.id,
                "session_id": self.session_id,
                "device_id": self.device_id,
                "surface": self.surface,
            },
            separators=(",", ":"),
            sort_keys=True,
        )


TRUSTED_SERVICE = Actor(SERVICE, "service")
"""The actor of a trusted caller that names no identity of its own (gRPC, tools)."""


def user_actor(principal: Principal) -> Actor:
    """The actor of an authenticated user's request."""
    return Actor(
        USER, principal.user_id, principal.session_id, principal.device_id, principal.surface
    )


def service_actor(name: str) -> Actor:
    """The actor of a named calling service."""
    return Actor(SERVICE, name)
