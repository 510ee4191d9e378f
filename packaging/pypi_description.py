"""README.md as PyPI shows it: the project page of the sdist and the wheel.

The README is written for a reader of the repository: it carries the markers that
.ci/run reads its commands from (``<!-- ci:test -->``), and it names files of the
repository (``docs/protocol.md``) that mean nothing on PyPI.  ``pypi_readme()`` drops
the markers and turns every repository path the README names (in a Markdown link or
in backquotes) into a link to that file in the release's tag, ``v<version>``, of the
project's ``Source`` URL.  setup.py loads this file by path at build time, so it uses
the standard library only.
"""

from __future__ import annotations

import re
from pathlib import Path

_MARKER = re.compile(r"^<!-- ci:[\w-]+ -->\n", re.M)
_LINK = re.compile(r"\]\((?!https?://|#|mailto:)([^)\s]+)\)")
_CODE_PATH = re.compile(r"(?<![\[`])`((?:docs|packaging|systemd|tests|completions)/[^`\s]+)`")


def pypi_readme(text: str, source_url: str, version: str, root: Path) -> str:
    """``text`` (README.md) for PyPI; ``root`` is the tree that its paths are checked in."""
    source = source_url.rstrip("/")

    def absolute(path: str) -> str:
        path = path[2:] if path.startswith("./") else path
        kind = "tree" if (root / path).is_dir() else "blob"
        return f"{source}/{kind}/v{version}/{path}"

    text = _MARKER.sub("", text)
    text = _LINK.sub(lambda m: f"]({absolute(m.group(1))})", text)

    def code_link(match: re.Match[str]) -> str:
        path = match.group(1)
        if not (root / path).exists():  # a path pattern or a generated file: leave it
            return match.group(0)
        return f"[`{path}`]({absolute(path)})"

    return _CODE_PATH.sub(code_link, text)
