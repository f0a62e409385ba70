"""Shared infrastructure of the Khala services: settings, logging, telemetry,
Postgres, RabbitMQ, JWT verification, gRPC and HTTP server helpers.

Domain types never live here; what crosses a process boundary is a proto message.
"""
