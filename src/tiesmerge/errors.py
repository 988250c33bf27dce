"""Errors the CLI turns into one-line messages and exit codes."""

import functools

from tiesmerge.portable.errors import AgentInputError


class TiesmergeError(Exception):
    """A failure with a message meant for the user (exit 1)."""

    exit_code = 1


class BadInputError(TiesmergeError):
    """The user's input is wrong: the message names the problem and the fix (exit 2)."""

    exit_code = 2


class Interrupted(KeyboardInterrupt):
    """SIGTERM / SIGHUP turned into an exception, so every `with` block cleans up as on Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def as_bad_input(fn):
    """`fn` (from the portable layer) with its AgentInputError raised as BadInputError, same message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AgentInputError as exc:
            raise BadInputError(str(exc)) from None

    return wrapper
