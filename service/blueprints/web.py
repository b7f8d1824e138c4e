"""The seed's browser pages: login, signup, dashboard, on the cookie session."""

from __future__ import annotations

from quart import Blueprint

blueprint = Blueprint("web", __name__)
