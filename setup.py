"""Build the optional native fan-out kernel (relaycast.native._fanout).

Everything else about the package is in pyproject.toml. The extension needs only a C compiler
and the Python headers; when it cannot be built, the build says so and goes on without it
(relaycast then uses the Python fan-out path: relaycast/native/__init__.py).

    python setup.py build_ext --inplace   # build it into src/ for the tests

RELAYCAST_NATIVE_CFLAGS adds compiler flags (scripts/asan.sh builds with AddressSanitizer).
"""

from __future__ import annotations

import os
import shlex
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing when the compiler does."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all, for example
            self._skip(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc)

    @staticmethod
    def _skip(exc: BaseException) -> None:
        if os.environ.get("RELAYCAST_NATIVE_REQUIRED") == "1":
            raise exc
        print(
            f"warning: the native fan-out kernel was not built ({exc}); "
            "relaycast will use the Python fan-out path",
            file=sys.stderr,
        )


extra = ["-O2", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wno-unused-parameter"]
extra += shlex.split(os.environ.get("RELAYCAST_NATIVE_CFLAGS", ""))
link = shlex.split(os.environ.get("RELAYCAST_NATIVE_LDFLAGS", ""))

setup(
    ext_modules=[
        Extension(
            "relaycast.native._fanout",
            sources=["src/relaycast/native/_fanout.c"],
            extra_compile_args=extra,
            extra_link_args=link,
            optional=True,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
