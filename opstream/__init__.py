"""opstream: an event-sourced tracker for long-running operations behind an HTTP API."""

from __future__ import annotations

__version__ = "0.1.0"
