"""Every error and close code a service sends is in the proto contract.

Codes are collected two ways: the services' code tables (gateway `codes`,
runtime and control HTTP status maps) and a scan of their sources for error
constructors with a literal code, so a new refusal cannot ship without an
`ErrorCode` value (and so a row in docs/protocol.md).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from khala_control.handlers.errors import HTTP_STATUS as CONTROL_HTTP
from khala_gateway.domain import codes as gateway_codes
from khala_runtime.handlers.errors import GRPC_STATUS as RUNTIME_GRPC
from khala_runtime.handlers.errors import HTTP_STATUS as RUNTIME_HTTP
from openagents.sync.v1 import errors_pb2, ws_pb2

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*ROOT.glob("services/*/src"), ROOT / "libs/khala-common/src"]
# ControlError("code", …), DomainError("code", …), TokenError/AuthError("code", …),
# ApiError(status, "code", …), error_response(status, "code", …), also split over lines.
_CONSTRUCTOR = re.compile(
    r"\b(?:ControlError|DomainError|TokenError|AuthError)\(\s*\"([a-z_]+)\""
    r"|\b(?:ApiError|error_response)\(\s*\d+,\s*\"([a-z_]+)\""
)
# Codes that only tests or documented non-codes use.
_NOT_CODES = {"no_such_code"}


def _contract_codes() -> set[str]:
    return {
        v.name.removeprefix("ERROR_CODE_").lower()
        for v in errors_pb2.ErrorCode.DESCRIPTOR.values
        if v.number != 0
    }


def _source_codes() -> set[str]:
    found: set[str] = set()
    for src in SOURCES:
        for path in src.rglob("*.py"):
            for match in _CONSTRUCTOR.finditer(path.read_text()):
                found.add(match.group(1) or match.group(2))
    return found - _NOT_CODES


def test_source_scan_finds_codes() -> None:
    """The scan itself works (else the next test would pass vacuously)."""
    assert {"seq_conflict", "last_owner", "unauthorized", "runtime_unavailable"} <= _source_codes()
    assert len(_source_codes()) > 20


def test_every_sent_code_is_in_error_code_enum() -> None:
    gateway = {
        value
        for name, value in vars(gateway_codes).items()
        if name.isupper()
        and isinstance(value, str)
        and not name.endswith("SUBPROTOCOL")
        and name
        not in {"SUBPROTOCOLS", "RETENTION", "EPOCH_CHANGED", "CURSOR_AHEAD", "REPLAY_BUDGET"}
    }
    tables = gateway | set(RUNTIME_HTTP) | set(RUNTIME_GRPC) | set(CONTROL_HTTP)
    # error_middleware's status fallbacks (khala_common.http).
    common = {"not_found", "method_not_allowed", "payload_too_large", "bad_request", "internal"}
    missing = (tables | common | _source_codes()) - _contract_codes()
    assert not missing, (
        f"add these to ErrorCode in proto/openagents/sync/v1/errors.proto: {sorted(missing)}"
    )


def test_every_close_code_is_in_close_code_enum() -> None:
    sent = {
        value
        for name, value in vars(gateway_codes).items()
        if name.startswith("CLOSE_") and isinstance(value, int)
    }
    contract = {v.number for v in ws_pb2.CloseCode.DESCRIPTOR.values if v.number != 0}
    assert {1000, 1011, 4002} <= sent
    assert sent - contract == set()


def test_protocol_doc_tables_are_generated_from_the_proto() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_protocol_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
