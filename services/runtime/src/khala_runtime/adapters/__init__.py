"""Clients of other services and broker publishing."""
