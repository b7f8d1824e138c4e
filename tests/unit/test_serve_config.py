"""Where ``python -m service.serve`` takes its hypercorn settings from: ``--config``, else
./hypercorn.toml, else built-in defaults equal to the repository's hypercorn.toml (an installed
package has no such file)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from service.ops.serve import BUILTIN_CONFIG, StartupError, read_config
from tests.servers import ROOT

# What Config reads from a file or mapping (its other attributes are hypercorn's own defaults).
SETTINGS = sorted(tomllib.loads((ROOT / "hypercorn.toml").read_text()))


def test_the_builtin_defaults_are_the_repositorys_hypercorn_toml() -> None:
    assert tomllib.loads((ROOT / "hypercorn.toml").read_text()) == BUILTIN_CONFIG


def test_without_a_config_file_anywhere_the_builtin_defaults_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    config = read_config(None)

    repository = read_config(ROOT / "hypercorn.toml")
    assert {name: getattr(config, name) for name in SETTINGS} == {
        name: getattr(repository, name) for name in SETTINGS
    }
    assert config.bind == ["127.0.0.1:8000"]
    assert config.backlog == 2048


def test_a_hypercorn_toml_in_the_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hypercorn.toml").write_text('bind = ["127.0.0.1:9001"]\nbacklog = 64\n')
    monkeypatch.chdir(tmp_path)

    config = read_config(None)

    assert config.bind == ["127.0.0.1:9001"]
    assert config.backlog == 64


def test_an_explicit_config_that_is_missing_is_an_error_not_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(StartupError) as raised:
        read_config(Path("missing.toml"))

    assert str(raised.value) == "cannot read missing.toml: No such file or directory"


def test_a_broken_hypercorn_toml_in_the_working_directory_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hypercorn.toml").write_text("bind = [\n")
    monkeypatch.chdir(tmp_path)

    with pytest.raises(StartupError, match=r"^cannot read hypercorn\.toml: "):
        read_config(None)
