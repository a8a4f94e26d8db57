"""The face-neutral application: what the hub answers, whichever face carries the bytes.

``build(settings)`` makes one; the standalone server (``ssehub.server``) and the ASGI face
(``ssehub.asgi``) both hand it ``Request`` values and carry out its typed answers.
"""

from .answers import DeferredPublish, Request, Response, error_response, response
from .application import Answer, App
from .build import build
from .streams import OpenedStream, StreamHead

__all__ = [
    "Answer",
    "App",
    "DeferredPublish",
    "OpenedStream",
    "Request",
    "Response",
    "StreamHead",
    "build",
    "error_response",
    "response",
]
