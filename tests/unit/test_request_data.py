"""Request bodies, query strings and path variables become converter input, or a clear 400."""
import json

import pytest

from connectors.rest.request_data import BadRequestData, read_request


def read(body: bytes, ctype: str = "", query: bytes = b"", path=None, raw=False):
    return read_request(body, ctype, query, path or {}, raw)


def test_json_whatever_the_content_type():
    got = read(b'{"a": 1}', "application/x-www-form-urlencoded")
    assert got.body_kind == "json" and got.messages == [{"a": 1}]


def test_array_is_several_messages_each_with_query_and_path():
    got = read(b'[{"a": 1}, {"a": 2, "q": "body"}]', "application/json", b"q=query&x=1", {"id": "7"})
    assert got.messages == [{"id": "7", "q": "query", "x": "1", "a": 1}, {"id": "7", "q": "body", "x": "1", "a": 2}]


def test_body_wins_over_query_which_wins_over_path():
    got = read(b'{"k": "body"}', "application/json", b"k=query&p=query", {"k": "path", "p": "path", "v": "path"})
    assert got.messages == [{"k": "body", "p": "query", "v": "path"}]


def test_form_fields():
    got = read(b"temp=21.5&hum=40", "application/x-www-form-urlencoded")
    assert got.body_kind == "form" and got.messages == [{"temp": "21.5", "hum": "40"}]


def test_empty_body_gives_query_only():
    got = read(b"", "", b"temp=3")
    assert got.body_kind == "empty" and got.messages == [{"temp": "3"}]


@pytest.mark.parametrize("body, fragment", [
    (b'{"a": ', "not valid JSON"),
    (b"\xff\xfe{}", "not valid UTF-8"),
    (b'{"a": NaN}', "NaN is not valid JSON"),
    (b'{"a": Infinity}', "Infinity"),
    (b"[" * 10000 + b"]" * 10000, "nested too deeply"),
    (b"[]", "empty JSON array"),
    (b"[1, 2]", "element [0]"),
    (b"42", "a number"),
    (b'"text"', "a string"),
    (b"{\"a\": 1" + b"0" * 5000 + b"}", "not accepted"),
])
def test_bad_json_is_a_clear_error(body, fragment):
    with pytest.raises(BadRequestData, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        read(body, "application/json")


def test_non_json_body_is_rejected_unless_raw_wanted():
    with pytest.raises(BadRequestData, match="not JSON"):
        read(b"temp 21", "text/plain")
    got = read(b"temp 21", "text/plain", raw=True)
    assert got.body_kind == "raw" and got.raw == b"temp 21"


def test_broken_json_looking_text_goes_raw_to_custom_converters():
    assert read(b"{not json", "text/plain", raw=True).body_kind == "raw"
    with pytest.raises(BadRequestData):
        read(b"{not json", "application/json", raw=True)


def test_duplicate_keys_last_wins():
    assert read(b'{"a": 1, "a": 2}').messages == [{"a": 2}]


def test_nested_values_kept():
    doc = {"a": {"b": [1, {"c": None}]}}
    assert read(json.dumps(doc).encode()).messages == [doc]
