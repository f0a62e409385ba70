"""Runtime's pure domain: run state machine, hash chain, canonical JSON,
idempotency and request validation. No I/O: nothing here imports asyncpg,
aio_pika or grpc, and every function is deterministic in its arguments."""
