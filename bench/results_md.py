"""bench/RESULTS.md is shared: each benchmark script owns one marked section of it.

`write_section` replaces the named section (or appends it) and leaves the sections other
scripts wrote as they were, so running one benchmark never erases another's figures.
"""
from __future__ import annotations

import os
import re

RESULTS_MD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- section {name}: begin -->", f"<!-- section {name}: end -->"


def write_section(name: str, text: str, path: str = RESULTS_MD) -> None:
    begin, end = _markers(name)
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    try:
        with open(path) as f:
            current = f.read()
    except FileNotFoundError:
        current = ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(current):
        updated = pattern.sub(lambda _m: block, current, count=1)
    else:
        updated = (current.rstrip() + "\n\n" if current.strip() else "") + block
    with open(path, "w") as f:
        f.write(updated)
