"""Build steps that pyproject.toml cannot express.

Everything else about the distribution is declared in pyproject.toml.  Here:

- ``build_py`` compiles the translations (below);
- the license is given as an SPDX expression (``License-Expression: MIT``) by a
  setuptools that knows them (77 and later), and as the older ``License: MIT`` field by
  Debian 12's setuptools 66, which builds the .deb: pyproject.toml cannot say both, and
  its old table form, ``license = {text = ...}``, stops working in 2027;
- the long description is README.md made fit for PyPI (packaging/pypi_description.py).

``build_py``
also compiles every ``lanchat/locale/<lang>/LC_MESSAGES/*.po`` into a ``.mo`` next to
it in the build directory, so wheels (and the packages built from them) carry the
compiled catalogues that ``gettext`` reads.  The compiler is lanchat's own
standard-library one (``lanchat/msgfmt.py``), loaded by path so the build needs
neither GNU gettext nor the package's dependencies.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import setuptools
from setuptools import setup
from setuptools.command.build_py import build_py

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
LICENSE = "MIT"


def _load(name: str, path: Path):  # type: ignore[no-untyped-def]
    """A module of this tree by path: the build needs none of the package's dependencies."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _msgfmt():  # type: ignore[no-untyped-def]
    return _load("lanchat_build_msgfmt", HERE / "lanchat" / "msgfmt.py")


def _setuptools_major() -> int:
    match = re.match(r"\d+", setuptools.__version__)
    return int(match.group(0)) if match else 0


def _license() -> dict[str, str]:
    if _setuptools_major() >= 77:
        return {"license_expression": LICENSE}
    return {"license": LICENSE}


def _long_description() -> dict[str, str]:
    project = tomllib.loads((HERE / "pyproject.toml").read_text("utf-8"))["project"]
    version = re.search(r'^__version__ = "(.+)"$',
                        (HERE / "lanchat" / "__init__.py").read_text("utf-8"), re.M)
    assert version is not None, "no __version__ in lanchat/__init__.py"
    describe = _load("lanchat_build_pypi", HERE / "packaging" / "pypi_description.py")
    text = describe.pypi_readme((HERE / "README.md").read_text("utf-8"),
                                project["urls"]["Source"], version.group(1), HERE)
    return {"long_description": text, "long_description_content_type": "text/markdown"}


class build_py_with_catalogues(build_py):
    def run(self) -> None:
        super().run()
        source = HERE / "lanchat" / "locale"
        target = Path(self.build_lib) / "lanchat" / "locale"
        for mo in _msgfmt().compile_tree(source, target):
            self.announce(f"compiled {mo.relative_to(self.build_lib)}", level=2)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        source = HERE / "lanchat" / "locale"
        for po in sorted(source.glob("*/LC_MESSAGES/*.po")):
            mo = Path(self.build_lib) / "lanchat" / "locale" / po.relative_to(source)
            outputs.append(str(mo.with_suffix(".mo")))
        return outputs


setup(cmdclass={"build_py": build_py_with_catalogues}, **_license(), **_long_description())
