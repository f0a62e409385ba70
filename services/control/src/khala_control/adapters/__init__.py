"""Clients of what control talks to: identity providers over HTTP and the broker."""
