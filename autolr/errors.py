"""The one exception type for mistakes a user can make (bad recipe, missing file, impossible depth)."""


class AutolrError(Exception):
    """A user-facing error: the CLI prints its message as one red line and exits with code 2."""

    exit_code = 2


class Diverged(AutolrError):
    """The loss became NaN or inf (a sweep or study counts such a run and goes on)."""
