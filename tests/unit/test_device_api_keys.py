"""Attribute key lists of the device API: repeated parameters and comma lists give their union."""
from __future__ import annotations

from connectors.rest.device_api.payloads import key_list


def test_comma_list() -> None:
    assert key_list(["a,b,,c"]) == ["a", "b", "c"]


def test_repeated_parameters_are_joined_like_thingsboards_http_controller() -> None:
    # TBHTTPDevice sends sharedKeys=fw_title&sharedKeys=fw_version&...
    assert key_list(["fw_title", "fw_version", "fw_size,fw_checksum", "fw_title"]) == [
        "fw_title", "fw_version", "fw_size", "fw_checksum"]


def test_blanks_and_absent() -> None:
    assert key_list([]) == []
    assert key_list([None, "", " , "]) == []
    assert key_list([" a ", "a"]) == ["a"]
