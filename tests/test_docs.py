"""The documentation cannot rot: its Python parses, names what exists, and lists every
setting. (The site itself is built by ``make docs``, warnings as errors.)"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re

import pytest

from litestar_bento_db import DatabaseConfig, HealthConfig, PluginConfig
from litestar_bento_db._values import env_name
from tests.servers import ROOT

PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks() -> list[tuple[str, str]]:
    return [
        (f"{page.name}#{index}", block)
        for page in PAGES
        for index, block in enumerate(_BLOCK.findall(page.read_text()))
    ]


@pytest.mark.parametrize(("where", "source"), _blocks(), ids=[where for where, _ in _blocks()])
def test_python_examples_parse_and_import_what_exists(where: str, source: str) -> None:
    tree = ast.parse(source, filename=where, feature_version=(3, 11))  # top-level await is
    # parsed as Python parses a module body only inside a function: compile checks the rest
    compile(tree, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("litestar_bento"):
            module = importlib.import_module(node.module or "")
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module}.{alias.name}"


def test_every_setting_is_in_the_configuration_reference() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    for field in dataclasses.fields(DatabaseConfig):
        if "env" in field.metadata:  # the DB_* settings (not password_provider, an object)
            assert f"`{env_name(field.name)}`" in reference, field.name


@pytest.mark.parametrize("config", [PluginConfig, HealthConfig])
def test_every_plugin_option_is_in_the_plugin_guide(config: type) -> None:
    guide = (ROOT / "docs" / "plugin.md").read_text()
    for field in dataclasses.fields(config):
        if field.init and field.name != "database":
            assert f"`{field.name}`" in guide, field.name


def test_the_readme_stays_short_and_links_pages_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).is_file(), target
