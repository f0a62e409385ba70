"""Control's pure domain: roles, surfaces, versions, scopes and token claims.

Nothing here performs I/O or imports asyncpg, aio_pika or grpc.
"""
