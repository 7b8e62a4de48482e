"""GS1 keys: check digits, GTIN-14 construction, Digital Link URIs."""

from __future__ import annotations

import pytest

from registry import gs1


def test_check_digit_of_published_codes() -> None:
    # UPC-A 036000291452 and EAN-13 4006381333931, as GTIN-14 (left zero padding)
    assert gs1.check_digit("00" + "03600029145") == "2"
    assert gs1.check_digit("0" + "400638133393") == "1"
    assert gs1.check_digit_ok("03760123456784") and gs1.check_digit_ok("00012345600012")
    assert not gs1.check_digit_ok("03760123456788")


def test_keys_need_their_length_ascii_digits_and_check_digit() -> None:
    assert gs1.is_gtin("03760123456784") and not gs1.is_gtin("3760123456784")
    assert not gs1.is_gtin("0376012345678\u0664")  # an Arabic-Indic 4 is a digit to str.isdigit, not to GS1
    gln = "952000000001" + gs1.check_digit("952000000001")
    assert gs1.is_gln(gln) and not gs1.is_gln(gln[:-1] + str((int(gln[-1]) + 1) % 10))
    assert not gs1.is_gln("03760123456784")


def test_make_gtin() -> None:
    g = gs1.make_gtin("376000000", 7)
    assert len(g) == 14 and g.startswith("0376000000") and gs1.is_gtin(g)
    assert len({gs1.make_gtin("3760001", r) for r in range(1, 9)}) == 8
    with pytest.raises(ValueError, match="does not fit"):
        gs1.make_gtin("3760000001", 1000)


def test_digital_link_round_trip() -> None:
    uri = gs1.digital_link("03760123456784", "LOT_20261206_0001")
    assert uri == "https://id.gs1.org/01/03760123456784/10/LOT_20261206_0001"
    assert gs1.parse_digital_link(uri) == ("03760123456784", "LOT_20261206_0001")
    assert gs1.parse_digital_link("https://brand.example/p/01/03760123456784/10/LOT_1?x=1") == (
        "03760123456784", "LOT_1")
    assert gs1.parse_digital_link("https://id.gs1.org/01/123/10/LOT") is None
