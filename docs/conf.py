"""Sphinx configuration: the guides (Markdown, MyST) and the API from the docstrings."""

from __future__ import annotations

project = "litestar-bento-db"
author = "the litestar-bento-db team"
copyright = "2026, the litestar-bento-db team"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# SQLAlchemy's, Litestar's and the standard library's types are named, not linked: the
# build stays offline (no inventories to fetch)
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
nitpicky = False

html_theme = "shibuya"
html_title = "litestar-bento-db"
