"""A revocation reaches resource servers (the Redis feed) or is not made: when the feed cannot
be told, the request fails with nothing committed, and the same request made again revokes
and tells. Told after the commit, a failure left the token revoked here, a retry found nothing
left to do, and resource servers went on accepting it until it expired."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from service.core.errors import RedisUnavailable
from service.store.feed import RevocationFeed
from service.web.state import get_state
from tests.support import PASSWORD, SettingsFactory, bearer, running_app

pytestmark = pytest.mark.parametrize("backend", ["postgresql+redis"], indirect=True)


def failing_once(feed: RevocationFeed) -> Callable[[], int]:
    """The feed's next publication fails as an unreachable Redis does; returns the count of
    publications refused so far."""
    publish = feed.publish
    refused = 0

    async def flaky(**facts: Any) -> None:
        nonlocal refused
        if refused == 0:
            refused += 1
            raise RedisUnavailable()
        await publish(**facts)

    feed.publish = flaky  # type: ignore[method-assign]
    return lambda: refused


@pytest.mark.parametrize("path", ["/logout", "/logout/all"])
async def test_a_logout_the_feed_could_not_hear_is_not_made_and_can_be_made_again(
    settings_factory: SettingsFactory, path: str
) -> None:
    async with running_app(settings_factory()) as app:
        client = app.test_client()
        signup = {"username": "feedy", "email": "feedy@example.com", "password": PASSWORD}
        assert (await client.post("/signup", json=signup)).status_code == 201
        login = await client.post("/login", json={"username": "feedy", "password": PASSWORD})
        token = (await login.get_json())["access_token"]
        state = get_state(app)
        claims = await state.authority.verify_access(token)
        feed = state.accounts.feed
        assert feed is not None
        refused = failing_once(feed)

        failed = await client.post(path, headers=bearer(token))
        # Any later change (here or in another worker) makes every cache read the database.
        await state.accounts.changed()
        still = await client.get("/protected", headers=bearer(token))
        again = await client.post(path, headers=bearer(token))
        after = await client.get("/protected", headers=bearer(token))
        told = await feed.refuses(claims)

    assert (refused(), failed.status_code) == (1, 503)
    assert still.status_code == 200  # nothing was revoked: the service and downstream agree
    assert again.status_code == 204
    assert after.status_code == 401
    assert told  # resource servers refuse it too
