#!/bin/sh
# Builds the Rust interop harness (interop/README.md) into build/interop-rust:
# copies the crate's wal.rs in from WALOGS_RS (it is never committed), then
# cargo build --offline --release. Where cargo, Debian's crc32fast or wal.rs
# is missing it builds nothing and prints one line, "interop: not built: WHY";
# with --check it only prints that line (or nothing, when it can build).
# Run by `make interop` and by tests/test_interop.py.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
registry=/usr/share/cargo/registry
if [ -z "${WALOGS_RS:-}" ]; then
    for candidate in "$here/../../shared/reference/walogs-0.1.0-wal.rs" /work/shared/reference/walogs-0.1.0-wal.rs; do
        if [ -f "$candidate" ]; then WALOGS_RS=$candidate; break; fi
    done
fi

why=
if ! command -v cargo >/dev/null 2>&1; then
    why="cargo is not installed"
elif ! ls -d "$registry"/crc32fast-* >/dev/null 2>&1; then
    why="no crc32fast in $registry (Debian's librust-crc32fast-dev; make system-deps installs it as root)"
elif [ ! -f "${WALOGS_RS:-}" ]; then
    why="the crate's wal.rs was not found (set WALOGS_RS=path/to/walogs-0.1.0-wal.rs)"
fi
if [ -n "$why" ]; then
    echo "interop: not built: $why"
    exit 0
fi
[ "${1:-}" = "--check" ] && exit 0

src=$here/rust/src/wal.rs
# A private temporary name, then a rename: test processes may build at the same time.
cmp -s "$WALOGS_RS" "$src" || { cp "$WALOGS_RS" "$src.$$" && mv "$src.$$" "$src"; }
cd "$here/rust" && exec cargo build --offline --release --quiet
