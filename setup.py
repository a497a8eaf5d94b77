"""Only what pyproject.toml cannot say: build the C module without the interpreter's rpath.

Some Pythons (pyenv's, built with --enable-shared) put ``-Wl,-rpath,<their lib dir>`` into
the flags every extension is linked with.  Our module needs no library from there (it does
not link libpython), and an rpath pointing outside a software release fails the release's
ELF check, so the flag is dropped.
"""

from setuptools import setup
from setuptools.command.build_ext import build_ext


class BuildWithoutInterpreterRpath(build_ext):
    def build_extensions(self) -> None:
        self.compiler.linker_so = [flag for flag in self.compiler.linker_so if "-rpath" not in flag]
        super().build_extensions()


setup(cmdclass={"build_ext": BuildWithoutInterpreterRpath})
