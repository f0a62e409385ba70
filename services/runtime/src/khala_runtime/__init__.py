"""khala_runtime service."""
