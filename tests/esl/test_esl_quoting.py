"""The one escaping function for channel variables and callcenter_config arguments."""

from __future__ import annotations

import pytest

from engine.esl.quoting import channel_var_value, channel_vars, check_name, leg_vars, quote_arg


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("a,b", "a\\,b"),
        ("x}y", "x\\}y"),
        ("O'Brien", "O\\'Brien"),
        ("back\\slash", "back\\\\slash"),
        ("Jane Doe", "'Jane Doe'"),
        ("Doe, Jane", "'Doe\\, Jane'"),
        ("", ""),
        (42, "42"),
        ("Zoë ☎", "'Zoë ☎'"),
    ],
)
def test_channel_var_value(value, expected) -> None:
    assert channel_var_value(value) == expected


def test_bracket_lists_also_escape_closing_bracket() -> None:
    assert channel_var_value("a]b") == "a]b"
    assert channel_var_value("a]b", bracket=True) == "a\\]b"
    assert leg_vars({"leg_timeout": 20, "tag": "x]y"}) == "[leg_timeout=20,tag=x\\]y]"


@pytest.mark.parametrize("bad", ["line\nbreak", "cr\r", "tab\t", "nul\x00", "del\x7f", "esc\x1b[0m"])
def test_control_characters_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        channel_var_value(bad)
    with pytest.raises(ValueError):
        quote_arg(bad)


def test_channel_vars_and_names() -> None:
    assert (
        channel_vars({"origination_caller_id_name": "Sales, EU", "switchdesk_lead": "L-1"})
        == "{origination_caller_id_name='Sales\\, EU',switchdesk_lead=L-1}"
    )
    with pytest.raises(ValueError):
        channel_vars({"bad name": "x"})
    with pytest.raises(ValueError):
        channel_vars({"a=b": "x"})


def test_quote_arg_for_callcenter_config() -> None:
    assert quote_arg("On Break") == "'On Break'"
    assert quote_arg("Available (On Demand)") == "'Available (On Demand)'"
    assert quote_arg("Available") == "Available"
    assert quote_arg("") == "''"
    with pytest.raises(ValueError):
        quote_arg("it's")
    assert check_name("12@example.com") == "12@example.com"
    for bad in ("a b", "a'b", "", "x\ny"):
        with pytest.raises(ValueError):
            check_name(bad)
