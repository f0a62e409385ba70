"""khala_control service."""
