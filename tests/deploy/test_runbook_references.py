"""Every log line, metric, command, make target and file a runbook names exists:
a runbook step that greps for a log line the code never writes, or queries a
metric no service exports, fails here instead of during an incident."""

from __future__ import annotations

import importlib.util
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = sorted((ROOT / "docs/runbooks").glob("*.md"))
MAINS = {
    "control": "services/control/src/khala_control/__main__.py",
    "runtime": "services/runtime/src/khala_runtime/__main__.py",
    "projector": "services/projector/src/khala_projector/__main__.py",
    "gateway": "services/khala-gateway/src/khala_gateway/__main__.py",
}

_spec = importlib.util.spec_from_file_location(
    "khala_deploy_checks_runbooks", ROOT / "deploy/checks.py"
)
assert _spec is not None and _spec.loader is not None
checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(checks)


@cache
def source() -> str:
    """The services' and khala-common's code (where every log line is written)."""
    paths = [*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("libs/khala-common/src/**/*.py")]
    return "\n".join(p.read_text() for p in paths)


def code_spans(text: str) -> list[str]:
    """Inline code and the lines of fenced blocks."""
    spans = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    text = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
    return [line for block in spans for line in block.splitlines()] + re.findall(
        r"`([^`\n]+)`", text
    )


def log_greps(span: str) -> list[tuple[str, bool]]:
    """(pattern alternative, case-insensitive) of each grep over `logs` output."""
    if "logs" not in span:
        return []
    lexer = shlex.shlex(span, posix=True, punctuation_chars="|")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        return []
    out = []
    for i, token in enumerate(tokens):
        if token != "grep" or i == 0 or tokens[i - 1] != "|":
            continue
        flags, j = "", i + 1
        while j < len(tokens) and tokens[j].startswith("-"):
            flags += tokens[j][1:]
            j += 1
        if j >= len(tokens) or "o" in flags or tokens[j].startswith("<") or tokens[j] == "...":
            continue
        pattern = tokens[j]
        for alt in pattern.split("|") if "E" in flags else [pattern]:
            out.append((alt, "i" in flags))
    return out


def references(path: Path) -> dict[str, set[str]]:
    text = path.read_text()
    spans = code_spans(text)
    refs: dict[str, set[str]] = {
        "grep": set(),
        "metric": set(),
        "make": set(),
        "command": set(),
        "file": set(),
        "log": set(),
    }
    for span in spans:
        for alt, insensitive in log_greps(span):
            refs["grep"].add(f"{'i:' if insensitive else ''}{alt}")
        refs["metric"] |= set(
            re.findall(
                r"\bkhala_(?:control|runtime|projector|gateway|http|grpc)_[a-z0-9_]+\b(?![.\w])",
                span,
            )
        )
        refs["make"] |= set(re.findall(r"\bmake ([a-z][a-z0-9-]*)", span))
        for svc, sub in re.findall(
            r"(?<![/\w-])khala-(control|runtime|projector|gateway) ([a-z][a-z-]*)", span
        ):
            refs["command"].add(f"{svc} {sub}")
        refs["file"] |= {
            f
            for f in re.findall(
                r"\b((?:scripts|deploy|docs)/[\w./-]+\.(?:py|sh|yaml|json|sql|md))", span
            )
        }
    # "logs `event`", "log line `event`": a log event the code must write
    refs["log"] |= set(re.findall(r"\blog(?:s| line| event)? `([a-z][a-z _]+)`", text))
    return refs


@pytest.mark.parametrize("path", RUNBOOKS, ids=[p.name for p in RUNBOOKS])
def test_runbook_names_only_what_exists(path: Path) -> None:
    refs = references(path)
    problems = [
        *unwritten_logs(refs),
        *unknown_metrics(refs["metric"]),
        *unknown_commands(refs),
        *missing_files(refs["file"]),
    ]
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


def unwritten_logs(refs: dict[str, set[str]]) -> list[str]:
    """Greps over logs and named log events that no service's code writes."""
    code = source()
    problems = []
    for ref in sorted(refs["grep"]):
        insensitive, pattern = ref.startswith("i:"), ref.removeprefix("i:")
        found = re.search(re.escape(pattern), code, re.I if insensitive else 0)
        if not found:
            problems.append(f"greps logs for {pattern!r}, which no service writes")
    for event in sorted(refs["log"]):
        if f'"{event}"' not in code:
            problems.append(f"names log event {event!r}, which no service writes")
    return problems


def unknown_metrics(metrics: set[str]) -> list[str]:
    """Named metrics that no service registers."""
    exported = checks.registered_metrics()
    return [
        f"names metric {name}, which no service exports"
        for name in sorted(metrics)
        if name not in exported
    ]


def unknown_commands(refs: dict[str, set[str]]) -> list[str]:
    """Named make targets and service subcommands that do not exist."""
    problems = []
    makefile = (ROOT / "Makefile").read_text()
    for target in sorted(refs["make"]):
        if not re.search(rf"^{re.escape(target)}:", makefile, re.M):
            problems.append(f"names `make {target}`, which the Makefile lacks")
    for command in sorted(refs["command"]):
        svc, sub = command.split()
        if not re.search(rf'add_parser\(\s*"{re.escape(sub)}"', (ROOT / MAINS[svc]).read_text()):
            problems.append(f"names `khala-{svc} {sub}`, which is no subcommand")
    return problems


def missing_files(files: set[str]) -> list[str]:
    """Named repository files that do not exist."""
    return [
        f"names {file}, which does not exist"
        for file in sorted(files)
        if not (ROOT / file).exists()
    ]


def test_the_checker_catches_a_stale_reference(tmp_path: Path) -> None:
    page = tmp_path / "stale.md"
    page.write_text(
        "Run `kx logs deploy/khala-gateway | grep -iE 'jwks|no such line ever'`,\n"
        "watch `khala_gateway_no_such_metric_total`, run `make no-such-target` and\n"
        "`khala-projector no-such-command`; the log line `never written anywhere`.\n"
    )
    with pytest.raises(AssertionError) as failure:
        test_runbook_names_only_what_exists(page)
    message = str(failure.value)
    for needle in (
        "'no such line ever'",
        "khala_gateway_no_such_metric_total",
        "make no-such-target",
        "khala-projector no-such-command",
        "'never written anywhere'",
    ):
        assert needle in message
    assert "'jwks'" not in message
