"""The `khala` command line client (console script `khala`)."""

from __future__ import annotations


def main() -> int:
    """Entry point of the `khala` console script."""
    from khala_client.cli.main import main as run

    return run()
