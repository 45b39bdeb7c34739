"""Data shows as text, never as Markdown (issue 22 item 6). A data set chooses its class names; one
named ``![pix](http://127.0.0.1:9/track.png)`` must not become an image that every annotator's
browser fetches from an address the data set chose, nor ``[click me](javascript:...)`` a link,
nor ``<img onerror=...>`` an element.

The helper (pages/_text.py) is checked against a CommonMark parser and through AppTest; a run
whose class names are those strings goes through the pages in AppTest and, when Debian's chromium
is at /usr/bin/chromium, in a real browser (Review card, Sample, Grid, Clusters).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from dynacor.data.spec import SourceSpec  # noqa: E402
from dynacor.runs.jobs import JobRunner  # noqa: E402
from dynacor.runs.request import prepare  # noqa: E402
from pages._text import WORD_JOINER, code, plain, plain_html  # noqa: E402
from tests.app_fixtures import FAST, write_features  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
RUN = "hostile-run"
IMAGE = "![pix](http://127.0.0.1:9/track.png)"
LINK = "[click me](javascript:alert(1))"
TAG = "<img src=x onerror=alert(1)>"
HOSTILE = [IMAGE, LINK, TAG]
FRAGMENTS = {IMAGE: "pix", LINK: "click me", TAG: "onerror"}
TRAP = "127.0.0.1:9"  # the address the image points at: nothing may ever request it
# Markdown constructs beyond the three of the report: every one must print as typed.
MORE = ["**bold** _it_ `code` ~~gone~~", "$x^2$ :red[red] :material/home:", "# heading", "- item", "1. first",
        "a | b", "&lt;tag&gt; &amp;", "back\\slash", "www.example.com ann@example.org http://x.org", "<http://x.org>",
        "line\nbreak", "``tick` run``"]  # fmt: skip


# ---- the helper


def rendered(markdown: str) -> str:
    """HTML of ``markdown`` by a CommonMark parser with GFM tables and strikethrough."""
    markdown_it = pytest.importorskip("markdown_it")
    return markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)


def text_of(html_text: str) -> str:
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", html_text)).replace(WORD_JOINER, "").strip()


@pytest.mark.parametrize("text", HOSTILE + MORE)
def test_plain_and_code_render_as_the_text_itself(text):
    for markup in (plain(text), code(text)):
        out = rendered(markup)
        assert "<img" not in out and "<a " not in out and "<h1" not in out and "<li" not in out, (markup, out)
        assert "<table" not in out and "<em" not in out and "<strong" not in out and "<del" not in out, (markup, out)
        assert text_of(out) == " ".join(text.split("\n")), (markup, out)  # a line break folds into a space


def test_plain_breaks_the_autolink_literals_that_escapes_do_not_stop():
    # remark-gfm finds http://, www. and e-mail addresses in the text after escapes are resolved.
    shown = rendered(plain("see http://127.0.0.1:9/x www.example.com ann@example.org"))
    assert "://" not in shown and "www." not in shown and "n@" not in shown
    assert text_of(shown) == "see http://127.0.0.1:9/x www.example.com ann@example.org"


def test_plain_html_keeps_plotly_from_reading_tags():
    assert plain_html(TAG) == "&lt;img src=x onerror=alert(1)&gt;"
    assert plain_html("<a href='http://x'>a & b</a>") == "&lt;a href='http://x'&gt;a &amp; b&lt;/a&gt;"


def _elements(names):  # an AppTest script: the names through every Markdown-rendering element
    import streamlit as st

    from pages._text import plain

    for i, name in enumerate(names):
        st.markdown(f"Given label: **{plain(name)}**")
        st.caption(plain(name))
        st.button(f"Accept: {plain(name)}", key=f"b{i}")
        st.metric(plain(name), plain(name))
        st.checkbox(plain(name), key=f"c{i}")


def test_elements_carry_the_escaped_text():
    """What Streamlit is given: the escaped text in every element (the browser test below shows
    what it draws from it)."""
    import sys

    sys.path.insert(0, str(ROOT))  # AppTest.from_function runs the script outside the app's folder
    at = AppTest.from_function(_elements, args=(HOSTILE,), default_timeout=30).run()
    assert not at.exception
    for i, name in enumerate(HOSTILE):
        assert at.markdown[i].value == f"Given label: **{plain(name)}**"
        assert at.caption[i].value == plain(name)
        assert at.button(key=f"b{i}").label == f"Accept: {plain(name)}"
        assert at.metric[i].label == at.metric[i].value == plain(name)
        assert at.checkbox(key=f"c{i}").label == plain(name)
        assert name not in at.markdown[i].value  # not one raw construct left


# ---- a run whose class names are the hostile strings


def hostile_run(runs_root: Path, data_dir: Path) -> Path:
    """The real engine on tiny blobs (a second or two) whose feature file names its three classes
    with the hostile strings; the images are there, so captions show too."""
    features = write_features(data_dir, n=150)
    data = dict(np.load(features))
    data["class_names"] = np.asarray(HOSTILE)
    np.savez(features, **data)
    request = prepare(SourceSpec(kind="features", path=str(features)), FAST, "fixture")
    job = JobRunner().start(runs_root / RUN, request.config, request.loader, request.source)
    assert job.wait(120), "the hostile run did not finish"
    assert job.snapshot().status == "finished", job.snapshot().error
    return runs_root / RUN


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("hostile")
    hostile_run(base / "runs", base / "data")
    return base


@pytest.fixture
def app_env(made, monkeypatch) -> Path:
    monkeypatch.setenv("DYNACOR_RUNS", str(made / "runs"))
    monkeypatch.setenv("DYNACOR_DATA_ROOTS", str(made))
    monkeypatch.setenv("DYNACOR_REVIEW_DB", f"sqlite:///{made / 'reviews-apptest.sqlite'}")
    return made


MARKDOWN_KINDS = ("markdown", "caption", "info", "success", "warning", "error", "title", "header", "subheader")


def markdown_sources(at: AppTest) -> list[str]:
    """Every string this script run gave to an element that renders Markdown."""
    out = [str(e.value) for kind in MARKDOWN_KINDS for e in at.get(kind)]
    out += [m.label for m in at.metric] + [str(m.value) for m in at.metric]
    out += [w.label for kind in ("button", "checkbox", "toggle", "selectbox", "radio", "expander") for w in at.get(kind)]
    out += [str(r) for r in (o for radio in at.radio for o in radio.options)]  # radio options are Markdown
    out += [img.caption for e in at.get("image") for img in e.proto.imgs]  # image captions are Markdown too
    return out


@pytest.mark.parametrize("page", ["review", "sample", "grid", "clusters", "team"])
def test_pages_give_streamlit_only_escaped_names(app_env, page):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["annotator"] = "tester"
    at.switch_page(f"pages/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    sources = markdown_sources(at)
    for name in HOSTILE:
        assert not [s for s in sources if name in s], f"{name} reached Markdown unescaped on {page}"
    if page in ("review", "sample", "grid"):
        assert any(plain(n) in s for n in HOSTILE for s in sources), f"no class name shown on {page}"
    if page == "clusters":  # the map's hover text: plotly reads it as HTML
        figure = json.loads(at.get("plotly_chart")[0].proto.spec)
        hover = " ".join(str(t) for trace in figure["data"] for t in trace.get("hovertext") or [])
        assert TAG not in hover and plain_html(TAG) in hover and plain_html(IMAGE) in hover


# ---- in a real browser


@pytest.fixture
def server(tmp_path, made):
    from tests.test_browser import browser_app

    with browser_app(tmp_path, made, tmp_path / "reviews.sqlite") as url:
        yield url, made / "runs" / RUN


@pytest.mark.browser
def test_names_print_literally_and_fetch_nothing_in_a_browser(server):
    from playwright.sync_api import sync_playwright

    from dynacor.runs import store as runstore
    from tests.test_browser import CHROMIUM, TIMEOUT_MS, goto, shot

    url, run = server
    frame = runstore.load_samples(run)
    sample_id = str(frame["id"].iloc[int(frame["noisy_score"].to_numpy().argmax())])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.set_default_timeout(TIMEOUT_MS)
        requests: list[str] = []
        dialogs: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

        def shown_in(text: str) -> list[str]:
            # A name that shows at all shows whole: rendered, the image would leave no "pix",
            # the link no brackets, the tag nothing (hence the look for such elements in check).
            return [name for name, part in FRAGMENTS.items() if part in text]

        def main_text(at_least: int) -> str:
            """The page's text once it shows ``at_least`` names (a rerun greys the page for a
            moment); after at least 1.5 s, by when an image would have been requested."""
            page.wait_for_timeout(1500)
            for _ in range(40):
                # plain() puts an invisible word joiner into http://, www. and @ (no autolink forms)
                text = page.get_by_test_id("stMain").inner_text().replace(WORD_JOINER, "")
                if len(shown_in(text)) >= at_least:
                    break
                page.wait_for_timeout(500)
            return text

        def check(where: str, text: str, at_least: int) -> None:
            shown = shown_in(text)
            assert len(shown) >= at_least, f"only {shown} of the class names on {where}: {text[:500]!r}"
            for name in shown:
                assert name in text, f"{name!r} is not printed as text on {where}"
            made = "img[alt=pix], img[src='x'], a[href^='javascript'], a[href*='127.0.0.1:9']"
            assert page.locator(made).count() == 0, f"a name became an image or a link on {where}"
            assert not [r for r in requests if TRAP in r], f"{where} fetched {TRAP}"
            assert not dialogs, f"{where} opened a dialog: {dialogs}"

        goto(page, url, "review?annotator=tester")
        page.locator("h4", has_text="id ").first.wait_for()
        check("the Review card", main_text(2), at_least=2)  # its given and suggested classes
        page.get_by_label("Another class (type to search)").click()  # the class search's list
        page.get_by_role("option").first.wait_for()
        check("the Review card's class search", page.get_by_role("listbox").inner_text().replace(WORD_JOINER, ""), 2)
        page.keyboard.press("Escape")
        shot(page, "escaping-review")

        goto(page, url, f"sample?run={RUN}&id={sample_id}")
        page.locator(".js-plotly-plot").first.wait_for()
        check("the Sample page", main_text(2), at_least=2)  # given and suggested
        shot(page, "escaping-sample")

        goto(page, url, "grid?annotator=tester")
        page.get_by_test_id("stCheckbox").first.wait_for()
        check("the Grid", main_text(2), at_least=2)  # "Keep <given>", "Accept <suggested>"
        page.get_by_test_id("stMain").get_by_test_id("stSelectbox").first.click()  # the groups, "<given> -> <suggested>"
        page.get_by_role("option").first.wait_for()
        check("the Grid's groups", page.get_by_role("listbox").inner_text(), 2)
        page.keyboard.press("Escape")
        shot(page, "escaping-grid")

        goto(page, url, "clusters")
        page.locator(".js-plotly-plot").first.wait_for()
        page.get_by_test_id("stRadio").get_by_text("given label").click()
        page.locator(".legendtext", has_text="pix").first.wait_for()
        legend = " ".join(page.locator(".legendtext").all_text_contents())
        check("the Clusters map's legend", legend, at_least=3)
        assert page.locator(".legendtext a, .legendtext image").count() == 0  # plotly made no link of a name
        shot(page, "escaping-clusters")
        browser.close()
    assert not [r for r in requests if TRAP in r]
