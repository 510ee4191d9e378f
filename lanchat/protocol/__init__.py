"""The lanchat wire protocols, sans-I/O: bytes in, typed events out."""
