"""The repository explains itself: every rule id it cites is defined in
docs/invariants.md, no file points at a document the repository does not
hold, and what a user reads (messages, docstrings) says rules in words.
"""

from __future__ import annotations

import ast
import os
import re

import walogs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The walogs under test: the source tree, or the installed wheel (its .py files; no .pyx there).
PACKAGE = os.path.dirname(os.path.abspath(walogs.__file__))
RULE_ID = re.compile(r"(?<![\w.-])([IP])(\d{1,2})(?![\w-])")
MISSING_DOCS = re.compile(r"\b(FORMAT|API|INVARIANTS|STYLE)\.md\b")
TEXT_SUFFIXES = (".py", ".pyx", ".pyi", ".pxd", ".h", ".c", ".md", ".rst", ".toml", ".txt", ".sh", ".in")
SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".hypothesis", "results"}


def _repository_files() -> list[str]:
    """Text files of the source tree (or of the copy the wheel test runs from)."""
    found = []
    for top in ("walogs", "tests", "docs", "examples", "benchmarks", "tools", "interop"):
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            found += [os.path.join(folder, f) for f in files if f.endswith(TEXT_SUFFIXES) or f == "Makefile"]
    found += [os.path.join(ROOT, f) for f in ("README.md", "CHANGELOG.md", "Makefile", "setup.py")]
    # Generated C is not ours to word; the wheel carries no sources at all.
    return [f for f in found if os.path.isfile(f) and not (f.endswith(".c") and os.path.exists(f[:-2] + ".pyx"))]


def _defined_ids() -> set[str]:
    with open(os.path.join(ROOT, "docs", "invariants.md")) as f:
        return {m.group(1) for m in re.finditer(r"^- \*\*([IP]\d{1,2})\*\*", f.read(), re.M)}


def test_every_rule_id_cited_is_defined_in_docs_invariants():
    defined = _defined_ids()
    assert {"I1", "I15", "P1", "P16"} <= defined
    undefined = []
    for path in _repository_files():
        with open(path, errors="replace") as f:
            for number, line in enumerate(f, 1):
                for match in RULE_ID.finditer(line):
                    if match.group(0) not in defined:
                        undefined.append(f"{os.path.relpath(path, ROOT)}:{number}: {match.group(0)}")
    assert not undefined, "\n".join(undefined)


def test_no_file_points_at_a_document_the_repository_lacks():
    dangling = []
    for path in _repository_files():
        with open(path, errors="replace") as f:
            for number, line in enumerate(f, 1):
                match = MISSING_DOCS.search(line)
                if match and not os.path.exists(os.path.join(ROOT, match.group(0))):
                    dangling.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
    assert not dangling, "\n".join(dangling)


def _strings(tree: ast.AST):
    """Every string constant of a module (docstrings, messages, f-string pieces) with its line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_messages_and_docstrings_say_rules_in_words():
    """Comments may cite rule ids for maintainers; strings a user can read may not."""
    cited = []
    for name in sorted(os.listdir(PACKAGE)):
        path = os.path.join(PACKAGE, name)
        if name.endswith((".py", ".pyi")):
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            cited += [f"walogs/{name}:{line}: {text.strip()[:90]!r}" for line, text in _strings(tree)
                      if RULE_ID.search(text) or MISSING_DOCS.search(text)]
        elif name.endswith(".pyx"):
            with open(path) as f:
                for number, line in enumerate(f, 1):
                    code = line.split(" # ", 1)[0] if not line.lstrip().startswith("#") else ""
                    if RULE_ID.search(code) or MISSING_DOCS.search(code):
                        cited.append(f"walogs/{name}:{number}: {line.strip()[:90]!r}")
    assert not cited, "\n".join(cited)
