#!/usr/bin/env python3
"""Check that the manual pages still match the commands they describe.

Every option and subcommand of lanchatd, lanchatctl and lanchat (read from their own
argparse parsers) must appear in the command's page, the pages must carry the
project's version, and lanchatd.toml(5) must be what make-toml-page.py writes now.
Prints each problem and exits 1 if there is any.

    python3 docs/man/check-pages.py        (from the repository, or with it on PYTHONPATH)
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

PAGES = {
    "lanchatd.8": "lanchatd.cli",
    "lanchatctl.8": "lanchatctl.cli",
    "lanchat.1": "lanchat.cli",
}
# Commands whose parser is separate from their page's main one (``lanchat doctor``).
MORE_PARSERS = {"lanchat.1": ["lanchat.client.doctor"]}


def words(parser: argparse.ArgumentParser, where: str = "") -> Iterator[tuple[str, str]]:
    """(word the page must mention, where it comes from) for a parser and its subparsers."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, f"{where}command {name}"
                yield from words(sub, f"{where}{name} ")
            continue
        for option in action.option_strings:
            if option not in ("-h", "--help"):
                yield option, f"{where}option {option}"


def page_text(path: Path) -> str:
    """The page's source with roff's escaped hyphens and font changes made plain."""
    text = path.read_text(encoding="utf-8").replace("\\-", "-")
    return re.sub(r"\\f(\(..|\[[^]]*\]|.)", "", text)


def main() -> int:
    from lanchat import __version__

    problems: list[str] = []
    for page, module in PAGES.items():
        text = page_text(HERE / page)
        for name in [module, *MORE_PARSERS.get(page, [])]:
            parser = importlib.import_module(name).build_parser()
            for word, origin in words(parser):
                pattern = r"(?<![\w-])" + re.escape(word) + r"(?![\w-])"
                if re.search(pattern, text) is None:
                    problems.append(f"{page}: does not mention {origin}")
    for page in [*PAGES, "lanchatd.toml.5"]:
        header = (HERE / page).read_text(encoding="utf-8").splitlines()[0]
        if f'"lanchat {__version__}"' not in header:
            problems.append(f"{page}: .TH does not say lanchat {__version__}: {header}")
    generated = subprocess.run(
        [sys.executable, str(HERE / "make-toml-page.py"), "--check"],
        capture_output=True,
        text=True,
    )
    if generated.returncode != 0:
        problems.append(generated.stderr.strip())
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
