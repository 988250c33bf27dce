"""The one error the portable code raises for input a user must fix (exit code 2, a one-line message)."""


class AgentInputError(Exception):
    """Bad input or settings: the message names the problem and the fix."""

    exit_code = 2
