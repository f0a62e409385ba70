"""Write docs/protocol.md's error-code and close-code tables from proto/.

proto/ is the contract: the tables between the `<!-- generated:NAME -->` and
`<!-- /generated:NAME -->` markers are rebuilt from the comments of the
`ErrorCode` (errors.proto) and `CloseCode` (ws.proto) enums, so the guide
cannot drift from the schema. `make proto-check` runs this with `--check`.

    uv run --no-sync python scripts/gen_protocol_docs.py          # write
    uv run --no-sync python scripts/gen_protocol_docs.py --check  # fail if stale
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "protocol.md"
PROTO_DIR = ROOT / "proto"
FILES = ("openagents/sync/v1/errors.proto", "openagents/sync/v1/ws.proto")

# FileDescriptorProto field numbers: enum_type = 5; EnumDescriptorProto value = 2.
_ENUM_TYPE = 5
_ENUM_VALUE = 2


def load_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The descriptors of FILES, with comments (source info)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.binpb"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                "-I",
                str(PROTO_DIR),
                "--include_source_info",
                f"--descriptor_set_out={out}",
                *FILES,
            ],
            check=True,
        )
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return {f.name: f for f in fds.file}


def enum_values(
    file: descriptor_pb2.FileDescriptorProto, enum_name: str
) -> list[tuple[str, int, str]]:
    """(name, number, leading comment) of each value of a top-level enum, in file order."""
    index = next(i for i, e in enumerate(file.enum_type) if e.name == enum_name)
    comments = {
        tuple(loc.path): loc.leading_comments.strip()
        for loc in file.source_code_info.location
        if loc.leading_comments
    }
    return [
        (value.name, value.number, comments.get((_ENUM_TYPE, index, _ENUM_VALUE, j), ""))
        for j, value in enumerate(file.enum_type[index].value)
        if value.number != 0
    ]


def wire_code(name: str) -> str:
    """ERROR_CODE_STALE_CURSOR -> stale_cursor (the string services send)."""
    return name.removeprefix("ERROR_CODE_").lower()


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def error_table(file: descriptor_pb2.FileDescriptorProto) -> str:
    """Markdown table of ErrorCode: code, enum value, who sends it, meaning."""
    rows = ["| code | `ErrorCode` | sent by | meaning |", "|---|---|---|---|"]
    for name, number, comment in enum_values(file, "ErrorCode"):
        first, _, rest = comment.partition("\n")
        if not first.startswith("Sent by:"):
            raise SystemExit(f"errors.proto: {name} must have a comment starting with 'Sent by:'")
        sent_by = first.removeprefix("Sent by:").strip().rstrip(".")
        rows.append(
            f"| `{wire_code(name)}` | {name} = {number} | {_cell(sent_by)} | {_cell(rest)} |"
        )
    return "\n".join(rows)


def close_table(file: descriptor_pb2.FileDescriptorProto) -> str:
    """Markdown table of CloseCode: number, enum value, meaning."""
    rows = ["| close code | `CloseCode` | meaning |", "|---|---|---|"]
    values = sorted(enum_values(file, "CloseCode"), key=lambda v: v[1])
    for name, number, comment in values:
        rows.append(f"| {number} | {name} | {_cell(comment)} |")
    return "\n".join(rows)


def render(doc: str, tables: dict[str, str]) -> str:
    """doc with each generated block replaced by its table."""
    for name, table in tables.items():
        pattern = re.compile(
            rf"(<!-- generated:{name} [^>]*-->\n).*?(<!-- /generated:{name} -->)", re.DOTALL
        )
        if not pattern.search(doc):
            raise SystemExit(f"{DOC}: markers for generated:{name} are missing")
        doc = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), doc)
    return doc


def main() -> int:
    """Write (or with --check, verify) the generated tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/protocol.md is stale")
    args = parser.parse_args()
    files = load_files()
    tables = {
        "error-codes": error_table(files[FILES[0]]),
        "close-codes": close_table(files[FILES[1]]),
    }
    current = DOC.read_text()
    wanted = render(current, tables)
    if args.check:
        if wanted != current:
            print(
                "docs/protocol.md tables are stale: run scripts/gen_protocol_docs.py",
                file=sys.stderr,
            )
            return 1
        return 0
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
