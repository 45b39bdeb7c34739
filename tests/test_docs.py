"""The documentation holds together: every relative link and image in README.md and docs/ points
at a file or folder that exists, the README stays a front page, and the screenshots stay small."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# [text](target) and ![alt](target), an optional "title" after the target; <a href>/<img src> too.
MARKDOWN_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"(?:href|src)=\"([^\"]+)\"")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def links(text: str) -> list[str]:
    """The link targets of a Markdown page, outside code blocks and inline code."""
    text = INLINE_CODE.sub("", FENCE.sub("", text))
    return MARKDOWN_LINK.findall(text) + HTML_LINK.findall(text)


def is_relative(target: str) -> bool:
    return not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) and not target.startswith(("#", "//"))


def test_link_finder_sees_links_and_skips_code():
    text = ("[a](docs/a.md#x) ![img](images/b.png \"t\") [web](https://x.org) [m](mailto:a@b) [#](#top)\n"
            "`[not](c.md)`\n```\n[not](d.md)\n```\n<img src=\"e.png\">")  # fmt: skip
    assert [t for t in links(text) if is_relative(t)] == ["docs/a.md#x", "images/b.png", "e.png"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    missing = []
    for target in links(page.read_text(encoding="utf-8")):
        if not is_relative(target):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path and not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)}: links to nothing: {missing}"


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    images = [t for t in links(text) if t.endswith(".png")]
    assert any("review" in t for t in images) and any("clusters" in t for t in images)
    # The two commands, as CI runs them (.ci/run runs the test command).
    assert '.venv/bin/pip install -e ".[all]" && .venv/bin/streamlit run app.py' in text
    test_command = '.venv/bin/pip install -e ".[all,dev]" && .venv/bin/python -m pytest -q -rs'
    assert test_command in text and ".venv/bin/python -m pytest -q -rs" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_screenshots_are_committed_and_small():
    images = sorted((ROOT / "docs" / "images").glob("*.png"))
    assert {"review.png", "clusters.png"} <= {p.name for p in images}
    assert all(p.stat().st_size < 500_000 for p in images), [(p.name, p.stat().st_size) for p in images]
