"""Configuration in one typed object: the CLI, the environment and Python build the same one."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the hub with its default. The CLI reads each as ``--name-with-dashes``
    or ``SSEHUB_NAME`` from the environment."""

    host: str = "127.0.0.1"
    port: int = 8000
    publisher_jwt_key: str | None = None
    subscriber_jwt_key: str | None = None
    store: str = "memory"
    workers: int = 1
    jwt_algorithm: str = "HS256"
    anonymous: bool = False
    heartbeat: float = 15.0
    retry: int | None = None
    history_size: int = 10_000
    history_max_age: float = 0.0
    max_write_buffer: int = 1 << 20
    max_head_size: int = 16 * 1024
    max_url_length: int = 8 * 1024
    max_body_size: int = 1 << 20
    max_topics: int = 100
    max_pipelined: int = 64
    demo: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.workers > 1 and self.store == "memory":
            raise ValueError(
                "--workers needs a shared store: each process would keep its own memory history"
                " (use --store redis://…)"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{f.name} must be >= 0, got {value}")
