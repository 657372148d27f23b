"""Stored text comes back typed by the value's declaration."""

from __future__ import annotations

from gateway.http.documents import typed
from gateway.model.declarations import BlobType, NumberType, StringType, XmlType

NUMBER = NumberType(min=-100, max=100)


def test_numbers_are_json_numbers_integers_stay_integers():
    assert typed(NUMBER, "21.5") == 21.5 and isinstance(typed(NUMBER, "21.5"), float)
    assert typed(NUMBER, "4") == 4 and isinstance(typed(NUMBER, "4"), int)
    assert typed(NUMBER, "-3") == -3
    assert isinstance(typed(NUMBER, "4.0"), float)  # written with a point: kept a float
    assert typed(NUMBER, "1e2") == 100.0


def test_text_that_is_no_number_is_returned_as_stored():
    assert typed(NUMBER, "warm") == "warm"


def test_strings_and_xml_stay_strings_even_when_they_look_numeric():
    assert typed(StringType(max=10), "42") == "42"
    assert typed(XmlType(max=100), "<a/>") == "<a/>"


def test_blobs_are_marked_so_they_are_never_mistaken_for_strings():
    assert typed(BlobType(max=100), "aGVsbG8=") == {"base64": "aGVsbG8="}
