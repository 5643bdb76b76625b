"""The codec implementations under test, listed once for every suite (P8).

``conftest.codec`` is a session fixture parametrized over ``CODECS`` (ids ``py``
and ``c``, as propcache's and multidict's conftests do), so both twins run in
one process; differential checks that compare the two in one call, and
``fuzz_atheris.py`` (no pytest there), iterate over ``CODECS`` itself.

Both modules are imported directly, whatever WALOGS_PURE_PYTHON says: the
compiled one must import unless that variable is set (then it is tested only
where it was built).
"""

from __future__ import annotations

import os

from walogs import _frame_py as py

PURE = os.environ.get("WALOGS_PURE_PYTHON", "") not in ("", "0")
"""``make test``'s pure-Python pass; without it, the compiled modules must be the ones under test."""

try:
    from walogs import _frame as cy
except ImportError as exc:  # pragma: no cover - depends on the build
    if not PURE:
        raise ImportError(
            f"the compiled codec walogs._frame does not import ({exc}): build it with "
            "`python3 setup.py build_ext --inplace` (or `make build`), or set "
            "WALOGS_PURE_PYTHON=1 to test the pure-Python codec alone"
        ) from exc
    cy = None

CODECS = {"py": py} if cy is None else {"py": py, "c": cy}
"""Each codec module by its test id; ``c`` only where walogs._frame imports."""
