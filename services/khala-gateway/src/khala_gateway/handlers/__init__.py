"""Thin edges: WebSocket, AMQP consumers, admin HTTP and gRPC."""
