"""ssehub: a Server-Sent Events push hub speaking the Mercure protocol."""

from .backends import Backend, Replay
from .backends.memory import MemoryBackend
from .errors import HubError
from .events import Event, StoredEvent
from .hub import Hub
from .settings import Settings

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "Event",
    "Hub",
    "HubError",
    "MemoryBackend",
    "Replay",
    "Settings",
    "StoredEvent",
    "__version__",
]
