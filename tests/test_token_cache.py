"""The cache of verified tokens is bounded by what it holds, not only by how many."""

from __future__ import annotations

import tracemalloc

import jwt

from ssehub.auth import Authenticator

from .support import KEY


def test_verified_token_cache_is_bounded_by_bytes() -> None:
    """4096 tokens of up to a request head each (16 KiB), with their decoded claims, could
    hold hundreds of MiB; the cache keeps a few MiB of them at most."""
    auth = Authenticator(None, KEY)
    payload = "p" * 12_000  # carried in each token, decoded into its claims
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i in range(2000):
            # A fresh token string per request, as the server parses each from its head.
            claims = {"mercure": {"subscribe": [f"urn:{i}"], "payload": f"{i}{payload}"}}
            token = jwt.encode(claims, KEY, algorithm="HS256")
            verified = auth.subscriber((token, "Authorization header"), anonymous=False)
            assert verified is not None and verified.subscribe == (f"urn:{i}",)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 12 << 20, f"the token cache holds {held >> 20} MiB"
    # What it keeps still answers from the cache: the newest token is not verified again.
    assert auth.subscriber((token, "Authorization header"), anonymous=False) is verified
