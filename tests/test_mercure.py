"""The Mercure request rules, sans-I/O: publish forms and subscribe queries."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssehub.errors import HubError
from ssehub.events import Event
from ssehub.mercure import FORM, _fields, parse_publish, parse_subscribe, query_token


def form(*pairs: tuple[str, str]) -> bytes:
    return urlencode(pairs).encode()


def test_publish_fields() -> None:
    body = form(
        ("topic", "https://example.com/a"),
        ("topic", "https://example.com/alt"),
        ("data", "  x\r\ny"),
        ("private", ""),
        ("id", "https://example.com/e/1"),
        ("type", "update"),
        ("retry", "2500"),
        ("unknown", "ignored"),
    )
    assert parse_publish(body, FORM + "; charset=utf-8") == Event(
        ("https://example.com/a", "https://example.com/alt"),
        "  x\r\ny",
        True,
        "https://example.com/e/1",
        "update",
        2500,
    )


def test_publish_defaults() -> None:
    assert parse_publish(form(("topic", "t")), FORM) == Event(("t",))


@pytest.mark.parametrize(
    ("body", "content_type", "status", "word"),
    [
        (form(("data", "x")), FORM, 400, "topic"),
        (form(("topic", "")), FORM, 400, "topic"),
        (form(("topic", "t"), ("id", "#frag")), FORM, 400, "#"),
        (form(("topic", "t"), ("id", "a\nb")), FORM, 400, "control"),
        (form(("topic", "t"), ("id", "a\x00b")), FORM, 400, "control"),
        (form(("topic", "t"), ("id", "earliest")), FORM, 400, "reserved"),
        (form(("topic", "t"), ("type", "a\rb")), FORM, 400, "type"),
        (form(("topic", "t"), ("retry", "-1")), FORM, 400, "retry"),
        (form(("topic", "t"), ("retry", "1.5")), FORM, 400, "retry"),
        (form(("topic", "t"), ("retry", "١٢")), FORM, 400, "retry"),
        (form(("topic", "t")), "application/json", 415, FORM),
        (form(("topic", "t")), None, 415, FORM),
        (b"topic=%FF", FORM, 400, "UTF-8"),
        (b"topic=\xff", FORM, 400, "UTF-8"),
    ],
)
def test_publish_refusals(body: bytes, content_type: str | None, status: int, word: str) -> None:
    with pytest.raises(HubError) as caught:
        parse_publish(body, content_type)
    assert caught.value.status == status
    assert word in caught.value.reason
    assert "\n" not in caught.value.reason


# Form text as clients send it and as they should not: separators, escapes (valid, cut short,
# not UTF-8 once decoded), plus signs and text that needs no escape, wide characters included.
_piece = st.sampled_from(["&", "=", "+", "%", "%2", "%41", "%2B", "%26", "%C3%A9", "%FF", "%E2%82"])
_form_text = st.lists(_piece | st.text(max_size=6) | st.text().map(quote), max_size=12).map("".join)


@settings(max_examples=500)
@given(_form_text)
def test_form_fields_read_as_parse_qsl_reads_them(text: str) -> None:
    try:
        expected = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=1000)
    except UnicodeDecodeError:
        with pytest.raises(HubError, match="not UTF-8"):
            _fields(text, "form")
        return
    assert _fields(text, "form") == expected
    assert _fields(text, "form") == expected  # the second reading of a short field is cached


def test_form_field_bound() -> None:
    assert len(_fields("&".join(["a=1"] * 1000), "form")) == 1000
    with pytest.raises(HubError, match="more than 1000 fields"):
        _fields("&".join(["a=1"] * 1001), "form")
    with pytest.raises(HubError, match="more than 1000 fields"):
        _fields("&" * 1000, "form")  # parse_qsl counts separators, not the fields they part


def test_subscribe_query_and_header_precedence() -> None:
    query = urlencode(
        [
            ("topic", "a"),
            ("topic", "b/{id}"),
            ("topic", "a"),
            ("lastEventID", "q"),
            ("authorization", "tok"),
        ]
    )
    sub = parse_subscribe(query, None, 10)
    assert sub.topics == ("a", "b/{id}")
    assert sub.last_event_id == "q"
    assert sub.authorization == "tok"
    assert parse_subscribe(query, "h", 10).last_event_id == "h"
    assert query_token(query) == "tok"
    assert query_token("topic=a") is None


def test_subscribe_refusals() -> None:
    with pytest.raises(HubError, match="topic") as missing:
        parse_subscribe("lastEventID=x", None, 10)
    assert missing.value.status == 400
    with pytest.raises(HubError, match="too many topics"):
        parse_subscribe(urlencode([("topic", str(i)) for i in range(11)]), None, 10)


def test_configuration_reference_is_current() -> None:
    from pathlib import Path

    from ssehub.config_docs import render

    page = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    assert page.read_text() == render(), "run: python -m ssehub.config_docs > docs/configuration.md"
