"""Clients of other services and the broker: token verification, control, queue bindings."""
