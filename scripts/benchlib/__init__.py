"""Shared pieces of the benchmark scripts (not part of the rcfs package)."""
