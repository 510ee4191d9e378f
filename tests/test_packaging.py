"""What the distribution says about itself: its PyPI page, its license, its completions.

The archives themselves are checked by packaging/check.sh (sdist, wheel) and
tests/system/run.sh (the .debs on a booted systemd); here are the parts a unit test
can reach.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pyproject() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))


def test_the_pypi_description_has_no_ci_markers_and_no_relative_paths() -> None:
    describe = _load("pypi_description", ROOT / "packaging" / "pypi_description.py")
    source = pyproject()["project"]["urls"]["Source"]
    readme = (ROOT / "README.md").read_text("utf-8")
    assert "<!-- ci:test -->" in readme  # what .ci/run needs stays in the README
    text = describe.pypi_readme(readme, source, "9.8.7", ROOT)
    assert "<!--" not in text
    assert f"[`docs/protocol.md`]({source}/blob/v9.8.7/docs/protocol.md)" in text
    assert f"[`docs/man/`]({source}/tree/v9.8.7/docs/man/)" in text
    # Every repository path in backquotes is linked (a command line such as
    # `packaging/build-debs.sh OUTDIR` stays as it is); relative links are gone.
    assert not re.search(r"(?<!\[)`(docs|packaging|systemd|tests)/[^`\s]*`", text)
    assert not re.search(r"\]\((?!https?://|#)", text)
    # Relative Markdown links of any kind become absolute.
    assert describe.pypi_readme("see [the protocol](docs/protocol.md).", source, "1", ROOT) \
        == f"see [the protocol]({source}/blob/v1/docs/protocol.md)."


def test_the_license_is_given_so_that_old_and_new_setuptools_agree() -> None:
    project = pyproject()["project"]
    assert "license" not in project and "license" in project["dynamic"]
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    requires = pyproject()["build-system"]["requires"]
    setuptools = next(r for r in requires if r.startswith("setuptools"))
    assert re.fullmatch(r"setuptools>=66,<\d+", setuptools), setuptools  # Debian 12 to a bound


def test_every_python_we_support_is_a_classifier() -> None:
    project = pyproject()["project"]
    assert project["requires-python"] == ">=3.9"
    versions = [c.rsplit(" :: ", 1)[1] for c in project["classifiers"]
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert versions == [f"3.{minor}" for minor in range(9, 14)]
