"""Sign-in in a real browser through a real OIDC provider running on loopback (PyPI
``oidc-provider-mock``, the client registered like any other): an annotator sees the runs but
cannot start or cancel one, and the decisions made on the Review and Grid pages carry the identity
they signed in with; an admin starts and cancels a run and exports. The Grid page reviews 24 cards
with one action. A proxy's trusted header signs people in too.

Needs Debian's chromium at /usr/bin/chromium, the playwright and oidc-provider-mock packages
(the dev extra) and Authlib (the app extra); no browser is downloaded.
"""

from __future__ import annotations

import json
import re
import secrets
import urllib.request
from pathlib import Path

import pytest

from dynacor.review import flagged_sorted
from dynacor.review.store import ReviewStore
from dynacor.runs import store as runstore
from tests.app_fixtures import finished_run, write_features
from tests.header_proxy import header_proxy
from tests.test_browser import CHROMIUM, TIMEOUT_MS, card_id, free_port, goto, shot, streamlit_app

pytestmark = pytest.mark.browser

RUN = "team-run"
ANN, LEAD = "ann@example.org", "lead@example.org"


def signed_in(identity: str, role: str) -> re.Pattern:
    """The sidebar's line: plain() puts an invisible word joiner before an address's @ so that it
    never becomes a link (pages/_text.py); the reader sees the identity as it is."""
    return re.compile(re.escape(f"Signed in as {identity} ({role})").replace("@", "\u2060?@"))
HEADER = "X-Forwarded-User"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
KEEP, REMOVE = "Keep label", "Remove sample"


def register_client(provider: str, redirect_uri: str) -> dict:
    """Dynamic client registration (RFC 7591): the provider then checks this client's secret and
    redirect URI like a real one."""
    request = urllib.request.Request(
        f"{provider}/oauth2/clients", data=json.dumps({"redirect_uris": [redirect_uri]}).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def write_secrets(path: Path, redirect_uri: str, provider: str, client: dict) -> None:
    path.write_text(
        "[auth]\n"
        f'redirect_uri = "{redirect_uri}"\n'
        f'cookie_secret = "{secrets.token_urlsafe(32)}"\n'
        f'client_id = "{client["client_id"]}"\n'
        f'client_secret = "{client["client_secret"]}"\n'
        f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n'
        "[dynacor]\n"
        f'trusted_user_header = "{HEADER}"\n'
        "[dynacor.roles]\n"
        f'admins = ["{LEAD}"]\n'
        'annotators = ["*@example.org"]\n'
    )


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """A finished run of 1,200 samples (groups of 24 and more), an OIDC provider with two users,
    and the app signing people in through it. Yields (app url, temp folder)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium) to run the browser test"
        )
    pytest.importorskip(
        "playwright.sync_api", reason="the playwright Python package is not installed"
    )
    pytest.importorskip("authlib", reason="st.login needs Authlib: pip install -e '.[app]'")
    mock = pytest.importorskip(
        "oidc_provider_mock", reason="pip install oidc-provider-mock (the dev extra)"
    )
    tmp = tmp_path_factory.mktemp("team")
    finished_run(tmp / "runs", tmp / "data", RUN, n=1200)
    users = [
        mock.User(sub="ann", claims={"email": ANN}),
        mock.User(sub="lead", claims={"email": LEAD}),
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(
            "AUTHLIB_INSECURE_TRANSPORT", "1"
        )  # the provider speaks plain http, on loopback
        with mock.run_server_in_thread(
            require_client_registration=True, require_nonce=True, user_claims=users
        ) as oidc:
            provider = f"http://localhost:{oidc.server_port}"
            port = free_port()
            redirect_uri = f"http://127.0.0.1:{port}/oauth2callback"
            write_secrets(
                tmp / "secrets.toml",
                redirect_uri,
                provider,
                register_client(provider, redirect_uri),
            )
            env = {
                "DYNACOR_RUNS": str(tmp / "runs"),
                "DYNACOR_DATA_ROOTS": str(tmp),
                "DYNACOR_REVIEW_DB": f"sqlite:///{tmp / 'reviews.sqlite'}",
            }
            secrets_file = ("--secrets.files", str(tmp / "secrets.toml"))
            with streamlit_app(tmp, port, env, secrets_file) as url:
                yield url, tmp


def sign_in(browser, url: str, sub: str):
    """A fresh browser context signed in as ``sub`` through the provider's authorisation page."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    goto(page, url, "")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role(
        "button", name=sub, exact=True
    ).click()  # the provider's page: a predefined user
    page.wait_for_url(f"{url}/**")
    page.get_by_test_id("stSidebar").get_by_text("Signed in as").wait_for()
    return page


def nav_titles(page) -> list[str]:
    links = page.get_by_test_id("stSidebarNav").get_by_test_id("stSidebarNavLink")
    links.first.wait_for()
    return [t.strip().splitlines()[-1] for t in links.all_inner_texts()]


def latest(tmp: Path):
    return ReviewStore(f"sqlite:///{tmp / 'reviews.sqlite'}").latest_decisions(
        runstore.run_id(tmp / "runs" / RUN)
    )


def test_annotator_reviews_under_the_signed_in_identity_and_cannot_start(team):
    from playwright.sync_api import expect, sync_playwright

    url, tmp = team
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = sign_in(browser, url, "ann")
        expect(page.get_by_test_id("stSidebar")).to_contain_text(
            signed_in(ANN, "annotator"), timeout=TIMEOUT_MS
        )
        page.get_by_text("Past runs").wait_for()
        expect(page.get_by_text("runs are started and cancelled by an admin")).to_be_visible(
            timeout=TIMEOUT_MS
        )
        expect(page.get_by_role("button", name="Start run")).to_have_count(0)
        assert nav_titles(page) == ["Run", "Training", "Clusters", "Sample", "Review", "Grid", "Team"]
        shot(page, "auth-annotator-run")

        before = len(latest(tmp))
        goto(page, url, "review")
        first = card_id(page)
        expect(page.get_by_label("Your name (stored with every decision)")).to_have_count(0)
        # K is the Keep button's shortcut: it exists once the button has rendered (a loaded
        # machine draws the heading well before the card's buttons)
        expect(page.get_by_role("button", name="Keep label")).to_be_visible(timeout=TIMEOUT_MS)
        page.locator("h1").first.click()
        page.keyboard.press("k")
        expect(page.locator("h4", has_text="id ").first).not_to_have_text(first, timeout=TIMEOUT_MS)
        decided = latest(tmp).set_index("sample")
        assert len(decided) == before + 1
        assert decided.loc[first.split()[1], "annotator"] == ANN
        browser.close()


def review_in_turns(pages: dict, url: str, steps: list[dict[str, str]], path: str = "review") -> dict[str, list[str]]:
    """Each signed-in page opens the Review page; at every step each in turn clicks its button
    ("Keep label", "Remove sample") on the card it shows and waits for the next. Returns the
    cards each saw, in order. (The keyboard shortcuts have their own test above.)"""
    from playwright.sync_api import expect

    seen = {who: [] for who in pages}
    for page in pages.values():
        goto(page, url, path)
    for buttons in steps:
        for who, page in pages.items():
            card = card_id(page)
            seen[who].append(card)
            page.get_by_role("button", name=buttons[who]).first.click()
            expect(page.locator("h4", has_text="id ").first).not_to_have_text(card, timeout=TIMEOUT_MS)
    return seen


def test_two_annotators_never_get_the_same_card(team):
    """Two people on one run's Review page, each in their own browser: every card either of them
    sees is leased to them alone, and the decisions split the queue."""
    from playwright.sync_api import sync_playwright

    url, tmp = team
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        pages = {who: sign_in(browser, url, who) for who in ("ann", "lead")}
        seen = review_in_turns(pages, url, [{"ann": KEEP, "lead": KEEP}] * 3)
        for who, page in pages.items():
            seen[who].append(card_id(page))  # the card each holds now
        browser.close()
    assert not set(seen["ann"]) & set(seen["lead"]), seen
    decided = latest(tmp).set_index("sample")
    for who, email in (("ann", ANN), ("lead", LEAD)):
        keys = [card.split()[1] for card in seen[who][:3]]
        assert (decided.loc[keys, "annotator"] == email).all()


def test_grid_reviews_24_cards_with_one_action(team):
    from playwright.sync_api import expect, sync_playwright

    url, tmp = team
    flagged = flagged_sorted(runstore.load_samples(tmp / "runs" / RUN))
    done = set(latest(tmp)["sample"])
    pending = flagged[~flagged["key"].isin(done)]
    # The first group in the page's list (class order): the one the grid opens on.
    given, suggested = min(zip(pending["given_label"], pending["suggested_label"], strict=True))
    group = pending[(pending["given_label"] == given) & (pending["suggested_label"] == suggested)]
    assert len(group) > 24, "the fixture run must give the grid more than a page of cards"
    shown = group["key"].head(24).tolist()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = sign_in(browser, url, "ann")
        goto(page, url, "grid")
        boxes = page.get_by_test_id("stCheckbox")
        boxes.nth(23).wait_for()
        assert boxes.count() == 24
        assert [t.split(" ")[0] for t in boxes.all_inner_texts()] == shown
        shot(page, "auth-grid")
        expect(
            page.get_by_role("button", name="(all 24)").filter(has_text="Accept class")
        ).to_be_enabled(timeout=TIMEOUT_MS)
        page.locator("h1").first.click()  # focus on the page, not on a checkbox
        page.keyboard.press("Shift+A")  # one action: accept the suggestion for all 24 shown
        page.get_by_text("Recorded 'accept' for 24 cards.").wait_for()
        browser.close()
    decided = latest(tmp).set_index("sample")
    assert set(shown) <= set(decided.index)
    assert len(decided) == len(done) + 24
    ours = decided.loc[shown]
    assert set(ours["decision"]) == {"accept"} and set(ours["label"]) == {int(suggested)}
    assert set(ours["annotator"]) == {ANN}


def test_admin_starts_and_cancels_a_run_the_annotator_only_watches(team):
    from playwright.sync_api import expect, sync_playwright

    url, tmp = team
    slow = write_features(tmp / "slow", n=3000, with_images=False)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        admin = sign_in(browser, url, "lead")
        expect(admin.get_by_test_id("stSidebar")).to_contain_text(
            signed_in(LEAD, "admin"), timeout=TIMEOUT_MS
        )
        assert nav_titles(admin)[-1] == "Export"
        admin.get_by_test_id("stSelectbox").filter(has_text="Source").first.click()
        admin.get_by_role("option", name="Feature file (.npz or .parquet)").click()
        admin.get_by_role("textbox", name="Path (for every source but the built-in sample)").fill(
            str(slow)
        )
        admin.get_by_label("Classifier epochs").fill("300")
        admin.get_by_label("Encoder epochs").fill("100")
        admin.get_by_role("button", name="Start run").click()
        cancel = admin.get_by_role("button", name="Cancel this run")
        cancel.wait_for()  # the Training page of the working run

        annotator = sign_in(browser, url, "ann")
        expect(annotator.get_by_text("A run is working")).to_be_visible(timeout=TIMEOUT_MS)
        expect(
            annotator.get_by_role("button", name="Follow it on the Training page")
        ).to_be_visible(timeout=TIMEOUT_MS)
        annotator.get_by_text(
            "Past runs"
        ).wait_for()  # drawn after where the cancel button would be
        expect(annotator.get_by_role("button", name="Cancel the run")).to_have_count(0)
        goto(annotator, url, "training")
        annotator.get_by_text("Status:").wait_for()
        annotator.get_by_role(
            "heading", name="Classifier"
        ).wait_for()  # after the cancel button's place
        expect(annotator.get_by_role("button", name="Cancel this run")).to_have_count(0)
        shot(annotator, "auth-annotator-training")

        cancel.click()
        admin.get_by_text("The run was cancelled.").wait_for(timeout=120_000)
        goto(admin, url, "export")
        expect(admin.get_by_role("button", name="Download CSV")).to_be_visible(timeout=TIMEOUT_MS)
        browser.close()
    slow_run = next(p for p in (tmp / "runs").iterdir() if p.is_dir() and p.name != RUN)
    assert runstore.read_status(slow_run)["status"] == "cancelled"


def test_a_trusted_proxy_header_signs_in_without_the_provider(team):
    from playwright.sync_api import expect, sync_playwright

    url, _ = team
    upstream = int(url.rsplit(":", 1)[1])
    with header_proxy(upstream, free_port(), HEADER, LEAD) as proxied, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_context().new_page()
        page.set_default_timeout(TIMEOUT_MS)
        goto(page, proxied, "")
        expect(page.get_by_test_id("stSidebar")).to_contain_text(
            signed_in(LEAD, "admin"), timeout=TIMEOUT_MS
        )
        expect(page.get_by_role("button", name="Start run")).to_be_visible(timeout=TIMEOUT_MS)
        expect(page.get_by_role("button", name="Sign out")).to_have_count(0)  # the proxy signs out
        browser.close()


def test_double_review_gives_each_card_to_both_and_the_team_page_shows_their_agreement(team):
    """A run of its own in double review: both annotators get the same cards (two slots each),
    vote, and the Team page reports their agreement."""
    from playwright.sync_api import expect, sync_playwright

    url, tmp = team
    finished_run(tmp / "runs", tmp / "double-data", "double-run", n=300)
    store = ReviewStore(f"sqlite:///{tmp / 'reviews.sqlite'}")
    run = runstore.run_id(tmp / "runs" / "double-run")
    store.set_queue(run, flagged_sorted(runstore.load_samples(tmp / "runs" / "double-run"))["key"].tolist())
    store.set_reviewers(run, 2)
    before = store.votes(run)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        pages = {who: sign_in(browser, url, who) for who in ("ann", "lead")}
        # they agree on the first three cards and differ on the last
        seen = review_in_turns(pages, url, [{"ann": KEEP, "lead": KEEP}] * 3 + [{"ann": KEEP, "lead": REMOVE}],
                               path="review?run=double-run")  # fmt: skip
        assert seen["ann"] == seen["lead"], seen  # double review: the same cards, in queue order
        lead = pages["lead"]
        goto(lead, url, "team?run=double-run")
        expect(lead.get_by_text("double review, 2 annotators per card").first).to_be_visible(timeout=TIMEOUT_MS)
        expect(lead.get_by_text("Fleiss' kappa")).to_be_visible(timeout=TIMEOUT_MS)
        shot(lead, "team-agreement")
        browser.close()
    votes = store.votes(run)
    new = votes[~votes.set_index(["sample", "annotator"]).index.isin(before.set_index(["sample", "annotator"]).index)]
    assert len(new) == 8 and new.groupby("sample")["annotator"].nunique().eq(2).all()
    assert store.queue_progress(run)["conflicts"] >= 1
