"""The base layer: the trace format, the snapshot schema and parsers, the event vocabulary and the
UAPI constants, with the error types and safe file I/O they need.

Everything else (collectors, the model, replay, reports, commands) is built on this package; it
imports nothing from them.
"""
