"""Test doubles shipped with the library, as structlog ships ``structlog.testing``: a real HTTP server on 127.0.0.1
that misbehaves on purpose (``FaultServer``), for our tests and for testing trainer code against a sick endpoint."""
