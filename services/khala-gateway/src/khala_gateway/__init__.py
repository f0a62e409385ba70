"""khala_gateway service."""
