"""NATS JetStream storage for the Net event bus (distribution ``net-adapter-jetstream``).

Installing the distribution registers the ``jetstream`` storage backend with net-core
(entry point ``net_core.plugins``) and the ``jetstream`` benchmark suite (``net bench
jetstream``)::

    async with Bus.open({"storage": {"backend": "jetstream",
                                     "options": {"url": "nats://127.0.0.1:4222"}}}) as bus:
        ...

The backend speaks the NATS protocol itself over anyio, so it runs on asyncio and trio.
"""

from net_adapter_jetstream._client import NatsConnectionError, NatsConnectionLost, NatsTimeout
from net_adapter_jetstream._config import READ_MODES, JetStreamStorageConfig
from net_adapter_jetstream._message import StoredMessageError
from net_adapter_jetstream._protocol import NatsProtocolError
from net_adapter_jetstream._storage import JetStreamApiError, JetStreamStorage

__all__ = [
    "READ_MODES",
    "JetStreamApiError",
    "JetStreamStorage",
    "JetStreamStorageConfig",
    "NatsConnectionError",
    "NatsConnectionLost",
    "NatsProtocolError",
    "NatsTimeout",
    "StoredMessageError",
]
