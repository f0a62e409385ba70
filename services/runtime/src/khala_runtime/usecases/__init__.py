"""Use cases: the work runtime does (write path, runs, workers, relay, verify)."""
