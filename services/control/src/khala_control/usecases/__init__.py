"""Control's use cases: each public method is one thing an edge asks for.

They combine the pure domain with storage (asyncpg), signing and the
revocation relay; the HTTP and gRPC edges only decode, call one, and encode.
"""
