"""The service with a quick mail sender: it looks at the outbox every 0.2 s and retries after
0.1-0.5 s (instead of 5 s doubling to 10 min), so that the outage tests wait seconds, not
minutes. Served by tests/system/test_mail_outage.py."""

from __future__ import annotations

from service.accounts.mail import RetryPolicy
from service.web.app import create_app
from service.web.state import EXTENSION_KEY, AuthState

app = create_app()

_state: AuthState = app.extensions[EXTENSION_KEY]
assert _state.local_accounts is not None
_mailer = _state.local_accounts.mailer
_mailer.retry = RetryPolicy(first=0.2, cap=0.5)
_mailer.poll_seconds = 0.2
