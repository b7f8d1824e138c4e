"""How pytest-xdist hands out the tests (``-n``): each test is a unit of work on its own, except
in the modules named here, whose tests share an expensive module-scoped fixture: each of those
modules is one unit, run by one worker, so its fixture starts once per run.

(xdist's own ``--dist loadgroup`` would say this with marks, but it does not group under pytest
9.2: it renames node ids through ``Item._nodeid``, which pytest no longer reads; pytest-xdist
issue 1386.)
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]  # no py.typed

# A browser and its server (tests/system/test_browser.py, test_mfa_browser.py with its virtual
# authenticator, and test_cors_browser.py with its pages on other origins); six real pytest
# sessions (the plugin's opt-in tests); the wheel built and installed into a fresh environment
# once.
ONE_WORKER_MODULES = (
    "tests/system/test_browser.py",
    "tests/system/test_cors_browser.py",
    "tests/system/test_mfa_browser.py",
    "tests/system/test_pytest_plugin.py",
    "tests/system/test_wheel.py",
)


class ModulesTogetherScheduling(LoadScopeScheduling):  # type: ignore[misc]
    def _split_scope(self, nodeid: str) -> str:
        module = nodeid.split("::", 1)[0]
        return module if module in ONE_WORKER_MODULES else nodeid
