"""Sign-in for the app's pages: who is using the app, the sign-in screen, the checks before an
action, the annotator's name. Reads ``st.secrets``, ``st.user`` and the request's headers; the
rules (roles, what each may do) are in ``dynacor.review.access``."""

from __future__ import annotations

import streamlit as st

from dynacor.errors import InputError
from dynacor.review import access
from dynacor.review.access import SIGNED_IN, SIGNED_OUT, Access, Policy
from pages._text import plain


def policy() -> Policy:
    """The sign-in policy from the app's secrets; the page stops with the reason when they are
    malformed."""
    secrets = st.secrets  # looked up at call time: the test harness swaps st.secrets per run
    try:
        present = secrets.load_if_toml_exists()
        return Policy.from_secrets(secrets.to_dict() if present else {})
    except InputError as exc:
        st.error(f"The sign-in configuration is wrong: {exc}")
        st.stop()


def current() -> Access:
    """Who is using the app, under the configured policy."""
    return access.resolve(policy(), st.user.to_dict(), dict(st.context.headers))


def gate() -> Access:
    """First thing app.py does: in single-user mode returns at once; with sign-in configured,
    shows the sign-in screen (and stops) to whoever is not signed in or holds no role, and puts
    who is signed in into the sidebar."""
    rules = policy()
    who = current()
    if who.mode == SIGNED_OUT:
        st.title("DynaCor")
        if rules.oidc:
            st.markdown("Sign in to review the flagged samples.")
            if st.button("Sign in", type="primary", key="sign_in"):
                st.login()
        else:
            st.error(f"This app takes the user from the `{rules.trusted_header}` header set by its proxy, "
                     "and this request came without it.")  # fmt: skip
        st.stop()
    if who.mode == SIGNED_IN:
        with st.sidebar:
            st.caption(f"Signed in as **{plain(who.identity)}**" + (f" ({who.role})" if who.role else ""))
            if who.via == "oidc" and st.button("Sign out", key="sign_out"):
                st.logout()
        if who.role is None:
            st.title("DynaCor")
            st.warning(f"You are signed in as **{plain(who.identity)}**, but no role is given to you here. "
                       "An admin adds you to `[dynacor.roles]` in the app's secrets.toml.")  # fmt: skip
            st.stop()
    return who


def require(action: str, what: str) -> Access:
    """Stop the page with a message unless the current user may ``action``."""
    who = current()
    if not who.can(action):
        st.error(
            f"Only an admin can {what}; you are signed in as {plain(who.identity or 'nobody')} ({who.role or 'no role'})."
        )
        st.stop()
    return who


def annotator() -> str:
    """The name stored with every decision: the signed-in identity when sign-in is configured
    (never typed); in single-user mode a name typed once per browser session and kept in the URL,
    so a reload keeps it (the page stops on the form until one is given)."""
    who = current()
    if who.mode == SIGNED_IN:
        return who.identity
    if who.mode == SIGNED_OUT:  # app.py's gate() shows the sign-in screen; never record anonymously
        st.stop()
    name = st.session_state.get("annotator") or st.query_params.get("annotator")
    if not name:
        with st.form("who"):
            typed = st.text_input("Your name (stored with every decision)", key="annotator_input")
            if st.form_submit_button("Start reviewing", type="primary") and typed.strip():
                st.session_state["annotator"] = typed.strip()
                st.rerun()
        st.stop()
    st.session_state["annotator"] = name
    st.query_params["annotator"] = name
    return name


if __name__ == "__main__":  # opened as a page (legacy mode lists every pages/*.py): go to app.py
    from pages._common import require_router

    require_router()
