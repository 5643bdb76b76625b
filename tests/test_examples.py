"""The README's first steps run: examples/quickstart.py and examples/worker_pool.py
(what ``make demo`` shows), and examples/event_store.py (named cursors, snapshot and
checkpoint), finish cleanly against the walogs under test, and worker_pool's pool of
producers appends through shared writers (it checks every LSN once and every entry read
back), with the implementation under test. (examples/gunicorn_app runs under real
gunicorn in test_gunicorn.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from _procs import ROOT

import walogs

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
# What an example must print besides finishing cleanly.
EXPECTED = {
    "quickstart.py": [],
    "event_store.py": [],
    "worker_pool.py": ["job queue: 2000 jobs, each result recorded exactly once by 4 workers",
                       "4 producers x 500 entries appended to one log",
                       f"each producer's in its own order (codec: {walogs.IMPLEMENTATION})"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(tmp_path, name):
    # ROOT holds the walogs under test (the source tree, or site-packages for the wheel).
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, os.path.join(EXAMPLES, name)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.strip(), "the example printed nothing"
    for expected in EXPECTED[name]:
        assert expected in done.stdout, (expected, done.stdout[-2000:])
