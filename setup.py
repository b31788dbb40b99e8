# Only here to hand cffi_modules to setuptools; all metadata lives in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["csrc/build.py:ffibuilder"])
