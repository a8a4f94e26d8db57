"""Settings from the environment: every kind of field, the shared key, overrides, bad values."""

from __future__ import annotations

from dataclasses import fields

import pytest

from ssehub.settings import DEFAULTS, Settings
from ssehub.settings_options import OPTIONS, Kind, from_env


def test_from_env_reads_every_kind_of_setting() -> None:
    settings = from_env(
        {
            "SSEHUB_JWT_KEY": "shared-secret",
            "SSEHUB_PORT": "9001",  # int
            "SSEHUB_HEARTBEAT": "2.5",  # float
            "SSEHUB_ANONYMOUS": "yes",  # flag
            "SSEHUB_DEMO": "0",
            "SSEHUB_CORS_ORIGINS": "https://a.example, https://b.example,,",  # list
            "SSEHUB_RETRY": "1500",  # optional int
            "SSEHUB_JWT_ISSUER": "https://issuer.example",  # optional text
            "SSEHUB_STORE": "sqlite:/tmp/x.db",  # text
            "UNRELATED": "ignored",
        }
    )
    assert settings.publisher_jwt_key == settings.subscriber_jwt_key == "shared-secret"
    assert (settings.port, settings.heartbeat, settings.retry) == (9001, 2.5, 1500)
    assert (settings.anonymous, settings.demo) == (True, False)
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.jwt_issuer == "https://issuer.example"
    assert settings.store == "sqlite:/tmp/x.db"
    assert settings.history_size == DEFAULTS.history_size  # unset: the default


def test_from_env_specific_key_and_overrides_win() -> None:
    settings = from_env(
        {
            "SSEHUB_JWT_KEY": "both",
            "SSEHUB_SUBSCRIBER_JWT_KEY": "sub-only",
            "SSEHUB_DEMO": "1",
        },
        demo=False,
    )
    assert (settings.publisher_jwt_key, settings.subscriber_jwt_key) == ("both", "sub-only")
    assert settings.demo is False


def test_from_env_names_the_bad_variable() -> None:
    with pytest.raises(ValueError, match="SSEHUB_PORT='eighty'"):
        from_env({"SSEHUB_PORT": "eighty"})
    with pytest.raises(ValueError, match="must be >= 0"):
        from_env({"SSEHUB_HISTORY_SIZE": "-1"})


def test_every_field_has_one_kind() -> None:
    assert [o.name for o in OPTIONS] == [f.name for f in fields(Settings)]
    kinds = {o.name: (o.kind, o.optional) for o in OPTIONS}
    assert kinds["anonymous"] == (Kind.FLAG, False)
    assert kinds["retry"] == (Kind.INT, True)
    assert kinds["jwt_leeway"] == (Kind.FLOAT, False)
    assert kinds["publisher_jwt_key"] == (Kind.TEXT, True)
    assert kinds["cors_origins"] == (Kind.LIST, False)
