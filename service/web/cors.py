"""Cross-origin browsers (CORS), as ``AUTH_CORS_ORIGINS`` lists them: not built yet."""

from __future__ import annotations

from quart import Quart

from service.core.config import Settings


def install_cors(app: Quart, settings: Settings) -> None:
    """Answer preflights and label responses for the listed origins (work in progress)."""
