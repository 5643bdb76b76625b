"""Build walogs, with its compiled frame codec ``walogs._frame`` when possible.

Metadata lives in pyproject.toml; this file only adds the extension.

The extension is optional: without Cython or a C compiler, or when its build
fails, walogs installs as pure Python (``walogs._frame_py``, the same codec)
and says so in a warning. Set ``WALOGS_REQUIRE_EXTENSIONS=1`` to make any of
those a hard error instead (CI, wheel builds).

CRC-32 (I1): libdeflate's ``libdeflate_crc32`` when a test program that calls
it compiles and links here (``-DWALOGS_HAVE_LIBDEFLATE -ldeflate``), else
zlib's ``crc32`` (``-lz``); see walogs/_crc.h. ``WALOGS_CRC=zlib`` or
``WALOGS_CRC=libdeflate`` forces one (the latter fails when it is missing);
add ``--force`` to build_ext when switching, as the sources did not change.

Works for ``python setup.py build_ext --inplace`` and ``pip wheel .``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:  # setuptools >= 59 vendors these; fall back to the stdlib (Python < 3.12)
    from setuptools.errors import CCompilerError, CompileError, LinkError, PlatformError
except ImportError:  # pragma: no cover - old setuptools
    from distutils.errors import CCompilerError, CompileError, LinkError
    from distutils.errors import DistutilsPlatformError as PlatformError

try:
    from setuptools.errors import BaseError as SetuptoolsBaseError
except ImportError:  # pragma: no cover - old setuptools
    from distutils.errors import DistutilsError as SetuptoolsBaseError


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


REQUIRE_EXTENSIONS = _flag("WALOGS_REQUIRE_EXTENSIONS")
CRC_CHOICE = os.environ.get("WALOGS_CRC", "auto").strip().lower() or "auto"
if CRC_CHOICE not in ("auto", "libdeflate", "zlib"):
    sys.exit(f"WALOGS_CRC must be auto, libdeflate or zlib, not {CRC_CHOICE!r}")

# Failures a C build can raise; any of them means "no extension" unless required.
BUILD_ERRORS = (CCompilerError, SetuptoolsBaseError, PlatformError, OSError, ValueError)

COMPILER_DIRECTIVES = {
    "language_level": 3,
    "embedsignature": True,
    "binding": True,
    "cdivision": True,
    "annotation_typing": False,
    "autotestdict": False,
}

LIBDEFLATE_PROBE = r"""
#include <libdeflate.h>
int main(void)
{
    /* zlib.crc32(b"hello"): the same CRC-32 as zlib (I1). */
    return libdeflate_crc32(0, "hello", 5) == 0x3610a686u ? 0 : 1;
}
"""


def _warn(message: str) -> None:
    bar = "*" * 75
    print(f"\n{bar}\nWARNING: {message}\n{bar}\n", file=sys.stderr)


@contextlib.contextmanager
def _silenced():
    """Send the probe compiler's stdout and stderr to /dev/null."""
    saved = []
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
            os.dup2(devnull, fd)
        os.close(devnull)
    except OSError:  # pragma: no cover - no fds to play with: just be noisy
        pass
    try:
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


def _links(compiler, code: str, libraries: list[str], include_dirs, library_dirs) -> bool:
    """Whether ``code`` compiles and links into a program with ``libraries``."""
    with tempfile.TemporaryDirectory(prefix="walogs-probe-") as tmp:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write(code)
        try:
            with _silenced():
                objects = compiler.compile([source], output_dir=tmp, include_dirs=include_dirs)
                compiler.link_executable(
                    objects,
                    os.path.join(tmp, "probe"),
                    libraries=libraries,
                    library_dirs=library_dirs,
                )
        except (CompileError, LinkError, CCompilerError, OSError):
            return False
    return True


class OptionalBuildExt(build_ext):
    """build_ext that picks the CRC library and survives a failed build.

    ``cythonize()`` drops ``Extension(optional=True)``, so failures are caught
    here: a warning and a pure-Python install, or an error under
    WALOGS_REQUIRE_EXTENSIONS=1.
    """

    def run(self):
        self._failed: set[str] = set()
        try:
            super().run()
        except BUILD_ERRORS as exc:
            self._give_up(exc, [ext.name for ext in self.extensions])

    def build_extensions(self):
        for ext in self.extensions:
            if ext.name == "walogs._frame":
                self._configure_crc(ext)
        super().build_extensions()

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except BUILD_ERRORS as exc:
            self._give_up(exc, [ext.name])
            self._failed.add(ext.name)

    def copy_extensions_to_source(self):
        # --inplace: copy only what was built (one warning per failure, not two).
        every = self.extensions
        self.extensions = [ext for ext in every if ext.name not in getattr(self, "_failed", ())]
        try:
            super().copy_extensions_to_source()
        finally:
            self.extensions = every

    def _configure_crc(self, ext: Extension) -> None:
        include_dirs = list(self.include_dirs or []) + list(ext.include_dirs)
        library_dirs = list(self.library_dirs or []) + list(ext.library_dirs)
        use_libdeflate = False
        if CRC_CHOICE != "zlib":
            use_libdeflate = _links(self.compiler, LIBDEFLATE_PROBE, ["deflate"], include_dirs, library_dirs)
            if CRC_CHOICE == "libdeflate" and not use_libdeflate:
                raise PlatformError("WALOGS_CRC=libdeflate, but libdeflate.h / -ldeflate does not build here")
        if use_libdeflate:
            ext.define_macros.append(("WALOGS_HAVE_LIBDEFLATE", "1"))
            ext.libraries.append("deflate")
            print("walogs._frame: CRC-32 from libdeflate")
        else:
            ext.libraries.append("z")
            if CRC_CHOICE == "auto":
                _warn(
                    "libdeflate (libdeflate.h and -ldeflate) was not found: walogs._frame computes CRC-32 "
                    "with zlib, which makes scans and large appends several times slower. Install "
                    "libdeflate's development files (Debian: libdeflate-dev) and reinstall for the fast CRC; "
                    "walogs.BUILD_INFO.crc and `walogs info` show which one a build uses."
                )
            else:
                print("walogs._frame: CRC-32 from zlib (WALOGS_CRC=zlib)")

    def _give_up(self, exc: BaseException, modules: list[str]) -> None:
        if REQUIRE_EXTENSIONS:
            raise exc
        names = " and ".join(modules) or "walogs' compiled modules"
        _warn(
            f"{names} could not be built ({exc}); walogs will use its pure-Python "
            "twin instead, which is correct but several times slower, and says so "
            "with a RuntimeWarning at import. Set WALOGS_REQUIRE_EXTENSIONS=1 to make this an error."
        )


def _extensions() -> list[Extension]:
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE_EXTENSIONS:
            sys.exit("WALOGS_REQUIRE_EXTENSIONS=1 but Cython is not installed (pip install 'Cython>=3.0,<4')")
        _warn("Cython is not installed: walogs._frame, walogs._writer and walogs._shared_writer are not built; walogs will use its pure-Python twins.")
        return []
    codec = Extension(
        "walogs._frame",
        ["walogs/_frame.pyx"],
        include_dirs=["walogs"],
        depends=["walogs/_crc.h", "walogs/_frame.pxd"],
        extra_compile_args=["-O2", "-Wall"],
    )
    # The active segment's writer: appends and group commit without the GIL. It
    # builds frames with the codec's C functions (cimported through _frame.pxd).
    writer = Extension(
        "walogs._writer",
        ["walogs/_writer.pyx"],
        depends=["walogs/_frame.pxd", "walogs/_calls.pxi"],
        extra_compile_args=["-O2", "-Wall"],
        extra_link_args=["-pthread"],
    )
    # A shared writer (Wal.open(..., shared=True)): the same, on state mapped by every process.
    shared_writer = Extension(
        "walogs._shared_writer",
        ["walogs/_shared_writer.pyx"],
        include_dirs=["walogs"],
        depends=["walogs/_frame.pxd", "walogs/_shared_writer.h", "walogs/_calls.pxi"],
        extra_compile_args=["-O2", "-Wall"],
        extra_link_args=["-pthread"],
    )
    try:
        return cythonize([codec, writer, shared_writer], compiler_directives=COMPILER_DIRECTIVES)
    except Exception as exc:  # Cython's CompileError and friends
        if REQUIRE_EXTENSIONS:
            raise
        _warn(f"Cython could not translate walogs' .pyx files ({exc}): walogs will use its pure-Python twins.")
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
