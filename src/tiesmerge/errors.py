"""Errors the CLI turns into one-line messages and exit codes."""


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
