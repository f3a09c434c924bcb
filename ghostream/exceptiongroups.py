"""Unwrapping Trio's exception groups where one error is the whole story."""

from __future__ import annotations

import trio


def sole_error(group: BaseExceptionGroup) -> BaseException:
    """The one real error inside nested groups (cancellations aside), else the group."""
    errors = [e for e in leaves(group) if not isinstance(e, trio.Cancelled)]
    return errors[0] if len(errors) == 1 else group


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]
