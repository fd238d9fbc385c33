"""Build the optional native extensions: the fan-out kernel (relaycast.native._fanout) and the
load generator's receive path (relaycast.loadgen._receiver).

Everything else about the package is in pyproject.toml. The extensions need only a C compiler
and the Python headers (both call libsrtp through the function pointers pylibsrtp exposes, so
neither links libsrtp nor OpenSSL); when one cannot be built, the build says so and goes on
without it (relaycast then uses the Python fan-out path, relaycast/native/__init__.py, and the
bench's viewers their Python receive path, relaycast/loadgen/receiver.py).
RELAYCAST_NATIVE_REQUIRED=1 makes a failed build fatal (scripts/test.sh).

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
            self._skip(exc, ext.name)

    @staticmethod
    def _skip(exc: BaseException, name: str = "") -> None:
        if os.environ.get("RELAYCAST_NATIVE_REQUIRED") == "1":
            raise exc
        fallback = {
            "relaycast.native._fanout": "relaycast will use the Python fan-out path",
            "relaycast.loadgen._receiver": "the bench's viewers will use the Python receive path",
        }
        print(
            f"warning: {name or 'the native extensions'} was not built ({exc}); "
            + fallback.get(name, "relaycast will use its Python paths"),
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
        ),
        Extension(
            "relaycast.loadgen._receiver",
            sources=["src/relaycast/loadgen/_receiver.c"],
            extra_compile_args=extra,
            extra_link_args=link,
            optional=True,
        ),
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
