"""Errors raised at vibekit's boundary."""

from __future__ import annotations


class InvalidRequestError(ValueError):
    """A request was rejected before any compute: the message says what was wrong and what is
    allowed."""
