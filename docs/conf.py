"""Sphinx configuration for walogs' documentation (``make docs``).

Builds the API reference from the docstrings of the public names in
``walogs.__all__`` plus the Markdown pages beside this file. ``make docs``
runs it with warnings as errors (``-W``), so a broken reference, a missing
docstring target or a page left out of the toctree fails the build.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import walogs  # noqa: E402

project = "walogs"
release = walogs.__version__
version = release
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"
html_theme = "alabaster"
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
# Markdown pages link each other by file name (format.md); MyST resolves those.
myst_heading_anchors = 3
nitpicky = False
