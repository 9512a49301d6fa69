"""The one exception type the CLI turns into a single clear line on stderr."""


class BasealignError(Exception):
    """A user-facing error: bad input, bad recipe, missing file. The message is one line."""
