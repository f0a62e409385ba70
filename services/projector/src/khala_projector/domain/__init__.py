"""Pure projection logic: event validation, reducers, sequencing, status.

Nothing here performs I/O or reads a clock: the same events always give the
same documents, bytes and hashes (DESIGN §4.3).
"""
