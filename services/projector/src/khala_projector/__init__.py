"""khala_projector service."""
