"""The error data_prep raises for bad recipes and bad input (one clear line)."""

from __future__ import annotations

from basealign.errors import BasealignError


class PrepareError(BasealignError):
    """A data-preparation failure the user can fix: bad recipe, missing file, wrong columns."""

    def __init__(self, message: str) -> None:
        # The CLI prints the message on one line; keep it that way whatever the caller passed.
        super().__init__(" ".join(str(message).split()))
