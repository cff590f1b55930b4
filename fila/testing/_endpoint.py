"""Where a test server listens: ``host``, ``port`` and the ``address`` to give a client."""

from __future__ import annotations

__all__ = ["Endpoint"]


class Endpoint:
    """``host``, ``port`` and ``address`` from ``_host`` / ``_port`` (shared by Broker and ExternalServer)."""

    _host: str
    _port: int

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the real one once started, also with ``port=0``)."""
        return self._port

    @property
    def address(self) -> str:
        """``"host:port"`` to point a client at."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"
