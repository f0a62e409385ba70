"""The delivery engine: hub, connections, subscriptions, admission and the session lifecycle."""
