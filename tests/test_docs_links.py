"""The documentation's links resolve: every relative link of README.md, docs/*.md and results/README.md names a file
of the repository and, with ``#anchor``, a heading of it (GitHub's anchors); the README links every page of docs/."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")), "results/README.md")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose(text: str) -> str:
    """The text outside fenced blocks (a link-like string in a code block is not a link)."""
    kept, inside = [], False
    for line in text.split("\n"):
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            kept.append(line)
    return "\n".join(kept)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (word characters, hyphens, spaces kept), spaces
    as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {anchor(line.lstrip("#")) for line in prose(path.read_text(encoding="utf-8")).split("\n")
            if re.match(r"#{1,6} ", line)}


def relative_links(document: str) -> list[str]:
    text = prose((ROOT / document).read_text(encoding="utf-8"))
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def link_problem(document: str, target: str) -> str | None:
    path_part, _, fragment = target.partition("#")
    path = (ROOT / document).parent / path_part if path_part else ROOT / document
    if not path.exists():
        return f"{document}: {target}: no such file"
    if fragment and path.suffix == ".md" and fragment not in anchors(path):
        return f"{document}: {target}: no heading #{fragment} in {path.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("document", DOCUMENTS)
def test_relative_links_resolve(document):
    problems = [link_problem(document, target) for target in relative_links(document)]
    assert not [p for p in problems if p]


def test_readme_links_every_page_of_docs_and_the_results():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in relative_links("README.md")}
    pages = {ROOT / doc for doc in DOCUMENTS if doc != "README.md"}
    assert not sorted(str(page.relative_to(ROOT)) for page in pages - linked)


def test_anchor_follows_github():
    assert anchor(" A fair comparison: each strategy's own training defaults, protocols and `--tune`") == \
        "a-fair-comparison-each-strategys-own-training-defaults-protocols-and---tune"
    assert link_problem("README.md", "docs/no-such-page.md") == "README.md: docs/no-such-page.md: no such file"
    assert link_problem("README.md", "results/README.md#no-such-heading").endswith("no heading #no-such-heading in "
                                                                                 "results/README.md")
