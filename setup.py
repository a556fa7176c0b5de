"""The one packaging rule pyproject.toml cannot say: every package under the top-level folders,
installed as kombain.<folder>.<...>, found rather than listed (the rest is in pyproject.toml)."""

from setuptools import find_packages, setup

ROOTS = ("server", "streaming", "clients", "loadtest")

setup(
    package_dir={f"kombain.{root}": root for root in ROOTS},
    packages=[f"kombain.{p}" for p in find_packages(include=[f"{r}{s}" for r in ROOTS for s in ("", ".*")])]
    + ["kombain.clients.web"],  # the call page: files only, no __init__.py (package-data in pyproject)
)
