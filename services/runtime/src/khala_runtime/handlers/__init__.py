"""Thin edges: HTTP routes and the gRPC RuntimeService."""
