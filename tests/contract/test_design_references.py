"""Every "DESIGN §n" cited in the repository names a section of docs/design.md.

Code and docs cite the design as "DESIGN §n" / "DESIGN §n.m" (a heading of
docs/design.md with that number) and "DESIGN invariant n" (item n of its §1).
A citation of a missing section, or an ADR under docs/decisions/ that its index
does not list, fails here; the checks are also run on a planted bogus citation
and an unlisted ADR, so they are known to be able to fail.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs/design.md"
DECISIONS = ROOT / "docs/decisions"
SCANNED_DIRS = ("services", "libs", "clients", "proto", "tests", "scripts", "deploy", "docs")
SUFFIXES = {".py", ".ts", ".proto", ".md"}
SKIPPED_PARTS = {"node_modules", ".venv", "__pycache__", "dist"}
DESIGN_WORD = "DESIGN"

# "DESIGN §4.3", "DESIGN §8 Auth", and a section named later in the same phrase
# ("DESIGN invariant 7 and §4.1").
_SECTION_CITE = re.compile(r"\bDESIGN\b[^§\n]{0,30}§\s?(\d+(?:\.\d+)*)")
_INVARIANT_CITE = re.compile(r"\bDESIGN invariants? (\d+)")
_HEADING = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)
_LIST_ITEM = re.compile(r"^(\d+)\.\s", re.MULTILINE)


def design_sections(text: str) -> set[str]:
    """Section numbers of the design's headings ("1", "4", "4.3", ...)."""
    return set(_HEADING.findall(text))


def design_invariants(text: str) -> set[str]:
    """Numbers of the invariants listed under the design's "## 1." heading."""
    start = re.search(r"^## 1\.\s", text, re.MULTILINE)
    assert start is not None, "docs/design.md has no '## 1.' (invariants) section"
    end = re.search(r"^## ", text[start.end() :], re.MULTILINE)
    body = text[start.end() : start.end() + end.start()] if end else text[start.end() :]
    return set(_LIST_ITEM.findall(body))


def cited_files(root: Path) -> list[Path]:
    """Source and doc files whose citations are checked."""
    files: list[Path] = []
    for top in SCANNED_DIRS:
        for path in (root / top).rglob("*"):
            if path.suffix in SUFFIXES and path.is_file():
                if not SKIPPED_PARTS.intersection(path.relative_to(root).parts):
                    files.append(path)
    return sorted(files)


def dangling_citations(root: Path, sections: set[str], invariants: set[str]) -> list[str]:
    """`path:line: citation` for every citation that names nothing in the design."""
    dangling: list[str] = []
    for path in cited_files(root):
        text = path.read_text(encoding="utf-8", errors="replace")
        if "DESIGN" not in text:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            where = f"{path.relative_to(root)}:{lineno}"
            dangling += [f"{where}: §{n}" for n in _SECTION_CITE.findall(line) if n not in sections]
            dangling += [
                f"{where}: invariant {n}"
                for n in _INVARIANT_CITE.findall(line)
                if n not in invariants
            ]
    return dangling


def unlisted_decisions(decisions: Path) -> list[str]:
    """ADR files of `decisions` that its README.md does not link to."""
    index = (decisions / "README.md").read_text(encoding="utf-8")
    return [
        p.name
        for p in sorted(decisions.glob("*.md"))
        if p.name != "README.md" and f"]({p.name})" not in index
    ]


def test_design_states_what_citations_mean() -> None:
    text = DESIGN.read_text(encoding="utf-8")
    assert '"DESIGN §n" in code and docs means this file, section n' in text
    assert {"1", "2", "3", "4", "5", "6", "7", "8", "9", "10"} <= design_sections(text)
    assert {str(n) for n in range(1, 8)} <= design_invariants(text)


def test_every_design_citation_names_a_section() -> None:
    text = DESIGN.read_text(encoding="utf-8")
    dangling = dangling_citations(ROOT, design_sections(text), design_invariants(text))
    assert not dangling, "citations of sections docs/design.md lacks:\n" + "\n".join(dangling)


def test_citations_are_found() -> None:
    """The scan sees the repository's citations (a broken glob would pass silently)."""
    cites = [
        n
        for path in cited_files(ROOT)
        for n in _SECTION_CITE.findall(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert "4.3" in cites and "9" in cites


def test_every_decision_is_in_the_index() -> None:
    assert sorted(DECISIONS.glob("0*.md")), "no ADRs under docs/decisions/"
    assert not unlisted_decisions(DECISIONS)


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """A bogus citation and an unlisted ADR are reported."""
    source = tmp_path / "services/svc/src/mod.py"
    source.parent.mkdir(parents=True)
    # Built from pieces so that this file itself cites nothing.
    bogus = f"Rule ({DESIGN_WORD} §" + "4.9); see " + f"{DESIGN_WORD} invariant " + "8"
    source.write_text(f'"""{bogus} and {DESIGN_WORD} §' + '4.3."""\n')
    found = dangling_citations(tmp_path, {"4", "4.3"}, {"1", "7"})
    assert found == ["services/svc/src/mod.py:1: §4.9", "services/svc/src/mod.py:1: invariant 8"]

    decisions = tmp_path / "decisions"
    decisions.mkdir()
    (decisions / "README.md").write_text("| [0001](0001-a.md) | a |\n")
    (decisions / "0001-a.md").write_text("# ADR 0001\n")
    (decisions / "0002-b.md").write_text("# ADR 0002\n")
    assert unlisted_decisions(decisions) == ["0002-b.md"]
