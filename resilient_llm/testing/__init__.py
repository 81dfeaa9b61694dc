"""Test doubles shipped with the library, as structlog ships ``structlog.testing``: a real HTTP server on 127.0.0.1
that misbehaves on purpose (``FaultServer``), for our tests and for testing trainer code against a sick endpoint; and
the pieces our tests and benchmarks share (a Redis process, a fleet of worker processes, the concurrency simulator,
DR Tulu's reward through an outage), so that neither imports the other."""
