"""ssehub: a Server-Sent Events push hub speaking the Mercure protocol."""

from .backends import Backend, Replay
from .backends.memory import MemoryBackend
from .errors import ConfigError, HubError
from .events import Event, StoredEvent
from .hub import Hub
from .settings import InvalidSetting, Settings

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "ConfigError",
    "Event",
    "Hub",
    "HubError",
    "InvalidSetting",
    "MemoryBackend",
    "Replay",
    "Settings",
    "StoredEvent",
    "__version__",
]
