"""The WebSocket message size limit runtime and the gateway share.

The gateway advertises `max_frame_bytes` in Welcome and never sends a larger
message; runtime refuses an event whose frame could not fit in one message in
the largest encoding (`frame_too_large`). Both read this default, so what
runtime accepts the gateway can always deliver: the gateway may be configured
with a larger limit (KHALA_GATEWAY_MAX_FRAME_BYTES), never a smaller one.
"""

from __future__ import annotations

from typing import Final

DEFAULT_MAX_FRAME_BYTES: Final = 1024 * 1024
