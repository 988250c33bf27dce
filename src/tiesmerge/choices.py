"""String enums for modes, parsed from user input with a one-line error that lists the choices."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from tiesmerge.errors import BadInputError

E = TypeVar("E", bound="Choice")


class Choice(str, Enum):
    @classmethod
    def parse(cls: type[E], value: "str | E", flag: str) -> E:
        try:
            return cls(value)
        except ValueError:
            raise BadInputError(f"{flag} {value!r} is unknown; use {' or '.join(m.value for m in cls)}") from None
