"""Thin edges: HTTP routes and the gRPC ControlService decode, call one use
case, and encode. No SQL and no business rules here."""
