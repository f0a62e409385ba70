"""The layer contracts of `make lint` (pyproject `[tool.importlinter]`) hold, and
each of them can fail: every contract is broken once, on a copy of the sources
with one offending module added per contract, and must then be reported BROKEN
because of that module (docs/architecture.md, "One shape").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
CONTRACTS = CONFIG["contracts"]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PROBE = "lint_probe"


def _source_dirs() -> list[Path]:
    roots = [ROOT / "libs/khala-common/src", ROOT / "libs/khala-proto/src"]
    return roots + sorted(ROOT.glob("services/*/src"))


def _violation(contract: dict[str, object]) -> tuple[str, str]:
    """(package path of a new module, its one import) that breaks `contract`."""
    kind = contract["type"]
    if kind == "independence":
        first, second = contract["modules"][:2]  # type: ignore[index]
        return first, f"import {second}"
    if kind == "forbidden":
        source = contract["source_modules"][0]  # type: ignore[index]
        return source, f"import {contract['forbidden_modules'][0]}"  # type: ignore[index]
    if kind == "layers":
        layers = contract["layers"]  # type: ignore[index]
        lowest = layers[-1].split("|")[0].strip()  # type: ignore[index]
        return lowest, f"import {layers[1].split('|')[0].strip()}"  # type: ignore[index]
    raise AssertionError(f"no violation written for contract type {kind!r}")


def _run(sources: list[Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(s) for s in sources)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _copy_sources(target: Path) -> list[Path]:
    copies = []
    for index, source in enumerate(_source_dirs()):
        copy = target / f"src{index}"
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
        copies.append(copy)
    return copies


def _module_dir(copies: list[Path], dotted: str) -> Path:
    relative = Path(*dotted.split("."))
    for copy in copies:
        if (copy / relative).is_dir():
            return copy / relative
    raise AssertionError(f"{dotted} is not a package in the sources")


def test_every_contract_is_kept() -> None:
    result = _run(_source_dirs(), ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(CONTRACTS)} kept, 0 broken" in result.stdout


def test_every_contract_is_reported_broken_by_its_own_violation(tmp_path: Path) -> None:
    copies = _copy_sources(tmp_path)
    for index, contract in enumerate(CONTRACTS):
        package, statement = _violation(contract)
        probe = _module_dir(copies, package) / f"{PROBE}_{index}.py"
        probe.write_text(f'"""Breaks {contract["id"]}."""\n\n{statement}\n')
    result = _run(copies, tmp_path)
    assert result.returncode != 0
    reports = _broken_reports(result.stdout)
    for index, contract in enumerate(CONTRACTS):
        assert f"{contract['name']} BROKEN" in result.stdout, contract["id"]
        assert f"{PROBE}_{index}" in reports[str(contract["name"])], contract["id"]


def _broken_reports(stdout: str) -> dict[str, str]:
    """Each broken contract's explanation, by contract name (lint-imports prints a
    name, a line of dashes as long as it, then the explanation)."""
    lines = stdout.split("Broken contracts", 1)[1].splitlines()
    reports: dict[str, str] = {}
    name = ""
    for line, underline in zip(lines, [*lines[1:], ""], strict=True):
        if underline and set(underline) == {"-"} and len(underline) == len(line):
            name = line
            reports[name] = ""
        elif name and not (set(line) == {"-"} and len(line) == len(name)):
            reports[name] += line + "\n"
    return reports
