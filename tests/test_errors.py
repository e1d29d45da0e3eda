"""How command-line words are read: true/false flags and "no value"."""

from pathlib import Path

import pytest

from iternet_monai.utils.errors import InputError, flag, optional


@pytest.mark.parametrize("value", [None, "", "none", "None", "NONE", " none ", Path("None")])
def test_none_in_any_case_is_no_value(value):
    assert optional(value) is None


@pytest.mark.parametrize("value", ["model.pt", Path("runs/none.pt"), 0, False, "nonesuch"])
def test_any_other_value_is_kept(value):
    assert optional(value) is value


def test_flags_are_read_in_any_case_and_anything_else_names_the_key():
    assert flag("TRUE", "tta") is True and flag("off", "tta") is False and flag(1, "tta") is True
    with pytest.raises(InputError, match="--tta 'maybe' is neither true nor false"):
        flag("maybe", "tta")
