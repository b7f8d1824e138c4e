"""Opt in to the auth-service fixtures and point them at the shop."""

from __future__ import annotations

import pytest

from examples.shop.app import create_shop_app
from service.testing import AppFactory, enable


def pytest_configure(config: pytest.Config) -> None:
    enable(config)


@pytest.fixture
def auth_app_factory() -> AppFactory:
    return create_shop_app
