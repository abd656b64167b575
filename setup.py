"""The one thing pyproject.toml cannot say: the optional C counting kernel, built at install.

``counting.c`` becomes ``fakespotter._counting``, which ``fakespotter.counting`` loads through
ctypes. ``optional=True``: without a C compiler (or where the build fails) the install goes
on without it, and counting runs on torch, with the same counts.
"""

import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

macros = [("FS_EXTENSION", None)]  # the module's import stub; the counting functions are plain C
if platform.machine() in ("x86_64", "AMD64") and sys.platform.startswith("linux"):
    macros.append(("FS_CLONES", None))  # an AVX2 copy of each function, picked at load time


class BuildKernel(build_ext):
    """Without ifunc (musl, an old toolchain) the AVX2 copies do not link: build it plain."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception:
            if ("FS_CLONES", None) not in ext.define_macros:
                raise
            ext.define_macros.remove(("FS_CLONES", None))
            super().build_extension(ext)


setup(
    cmdclass={"build_ext": BuildKernel},
    ext_modules=[
        Extension(
            "fakespotter._counting",
            sources=["src/fakespotter/counting.c"],
            define_macros=macros,
            extra_compile_args=[] if sys.platform == "win32" else ["-O3"],
            optional=True,
        )
    ],
)
