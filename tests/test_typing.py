"""Types that catch the common mistakes: ``mypy --strict`` passes on the examples
and flags a str entry, a bad sync mode and one bytes object passed as a batch.

Runs mypy on the walogs this suite tests (the source tree, or the installed
wheel with its ``py.typed`` and stubs); ``--follow-imports=silent`` keeps the
verdict to the files named, as a user's own type check would see walogs.
"""

from __future__ import annotations

import glob
import os
import textwrap

from mypy import api as mypy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "**", "*.py"), recursive=True))


def _mypy(*paths: str, cache: str) -> tuple[str, int]:
    out, err, status = mypy.run(["--strict", "--follow-imports=silent", "--no-error-summary",
                                 "--cache-dir", cache, *paths])
    return out + err, status


def test_the_examples_pass_mypy_strict(tmp_path):
    assert EXAMPLES
    report, status = _mypy(*EXAMPLES, cache=str(tmp_path / "cache"))
    assert status == 0, report


def test_mypy_strict_flags_the_common_mistakes(tmp_path):
    user = tmp_path / "user_code.py"
    user.write_text(textwrap.dedent("""\
        import walogs

        with walogs.Wal.open("/tmp/log", walogs.WalConfig(sync="sometimes")) as wal:
            wal.append("a str")
            wal.append_batch(b"one entry")
            wal.append(b"fine")
            wal.append_batch([b"a", bytearray(b"b"), memoryview(b"c")])
        """))
    report, status = _mypy(str(user), cache=str(tmp_path / "cache"))
    assert status == 1, report
    flagged = {int(line.split(":")[1]) for line in report.splitlines() if ": error:" in line}
    assert flagged == {3, 4, 5}, report
