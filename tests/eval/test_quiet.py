"""Third-party notices the user cannot act on stay off the terminal; warnings that ask something of the user stay."""

from __future__ import annotations

import warnings

import pytest

from tiesmerge.portable.quiet import quiet_libraries

pytestmark = pytest.mark.core


def shown(message: str, category=UserWarning, argv=()) -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries(list(argv))
        warnings.warn(message, category, stacklevel=2)
    return bool(caught)


def test_peft_adapter_switching_notices_are_silenced_but_real_warnings_are_not():
    assert not shown("Adapter math was active which is now deleted. Setting active adapter to code.")
    assert not shown("`is_gradient_checkpointing` is deprecated", FutureWarning)
    assert shown("the output's modules have different ranks")  # a UserWarning the user must read
    assert shown("Adapter math was active which is now deleted.", argv=["--debug"])  # --debug keeps everything
