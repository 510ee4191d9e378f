"""Build step that pyproject.toml cannot express: compile the translations.

Everything else about the distribution is declared in pyproject.toml.  Here ``build_py``
also compiles every ``lanchat/locale/<lang>/LC_MESSAGES/*.po`` into a ``.mo`` next to
it in the build directory, so wheels (and the packages built from them) carry the
compiled catalogues that ``gettext`` reads.  The compiler is the client's own
standard-library one (``lanchat/client/msgfmt.py``), loaded by path so the build needs
neither GNU gettext nor the package's dependencies.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _msgfmt():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "lanchat_build_msgfmt", HERE / "lanchat" / "client" / "msgfmt.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


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


setup(cmdclass={"build_py": build_py_with_catalogues})
