"""Clients of other services and of the broker: runtime's ReadStream, fanout
publication, and the projector's dead-letter queue."""
