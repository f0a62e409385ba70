"""The delivery engine: hub, connections, subscriptions, bindings."""
