# Only here to hand cffi_modules to setuptools; all metadata lives in pyproject.toml.
# The C kernels are optional: without a working C compiler the package installs without them and
# `deepprop list` / kernels.backends() say why the 'c' backend is unavailable.
from setuptools import setup
from setuptools.command.build_ext import build_ext


class optional_build_ext(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure leaves the C backend out
            self._skip(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._skip(exc)

    def _skip(self, exc):
        self.warn(f"deepprop: the C kernels were not built ({exc}); the 'c' backend will be unavailable")


setup(cffi_modules=["csrc/build.py:ffibuilder"], cmdclass={"build_ext": optional_build_ext})
