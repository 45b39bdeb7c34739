"""Sign-in rules (who is signed in, which role, what it allows) and the grid's pure functions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dynacor.errors import InputError
from dynacor.review.access import (
    ADMIN,
    ANNOTATOR,
    SIGNED_IN,
    SIGNED_OUT,
    SINGLE_USER,
    Access,
    Policy,
    resolve,
)
from dynacor.review.queue import flagged_sorted
from dynacor.review.triage import grid_cards, grid_decisions, groups

AUTH = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "s" * 32,
        "client_id": "dynacor", "client_secret": "x", "server_metadata_url": "http://127.0.0.1:1/.well-known/openid-configuration"}  # fmt: skip
ROLES = {"admins": ["Lead@Example.org", "ops-robot"], "annotators": ["*@example.org"]}


def policy(**dynacor) -> Policy:
    return Policy.from_secrets({"auth": AUTH, "dynacor": {"roles": ROLES, **dynacor}})


def test_no_auth_and_no_header_is_single_user_mode_where_everything_is_allowed():
    for secrets in ({}, {"dynacor": {"roles": ROLES}}):
        who = resolve(Policy.from_secrets(secrets), {"email": "test@example.com"}, {})
        assert who == Access(SINGLE_USER)
        assert all(who.can(a) for a in ("review", "start", "cancel", "export"))


def test_signed_in_roles_by_email_pattern_or_subject_case_insensitive():
    rules = policy()
    lead = resolve(rules, {"is_logged_in": True, "email": "lead@EXAMPLE.org", "sub": "1"}, {})
    assert (lead.mode, lead.identity, lead.role, lead.via) == (
        SIGNED_IN,
        "lead@example.org",
        ADMIN,
        "oidc",
    )
    assert lead.can("start") and lead.can("cancel") and lead.can("export") and lead.can("review")
    ann = resolve(rules, {"is_logged_in": True, "email": "ann@example.org", "sub": "2"}, {})
    assert ann.role == ANNOTATOR and ann.can("review")
    assert not (ann.can("start") or ann.can("cancel") or ann.can("export"))
    robot = resolve(rules, {"is_logged_in": True, "sub": "ops-robot"}, {})  # no email: the subject
    assert (robot.identity, robot.role) == ("ops-robot", ADMIN)
    stranger = resolve(rules, {"is_logged_in": True, "email": "eve@elsewhere.net"}, {})
    assert stranger.mode == SIGNED_IN and stranger.role is None and not stranger.can("review")


def test_signed_out_may_do_nothing():
    who = resolve(policy(), {"is_logged_in": False}, {})
    assert who == Access(SIGNED_OUT)
    assert not any(who.can(a) for a in ("review", "start", "cancel", "export"))
    with pytest.raises(ValueError, match="action"):
        who.can("delete-everything")


def test_trusted_header_only_when_configured_and_it_wins_over_oidc():
    headers = {"x-forwarded-user": " lead@example.org "}
    ignored = resolve(policy(), {"is_logged_in": False}, headers)
    assert ignored.mode == SIGNED_OUT  # not configured: a header anyone can send is no identity
    rules = policy(trusted_user_header="X-Forwarded-User")
    who = resolve(rules, {"is_logged_in": True, "email": "ann@example.org"}, headers)
    assert (who.identity, who.role, who.via) == ("lead@example.org", ADMIN, "header")
    oidc = resolve(rules, {"is_logged_in": True, "email": "ann@example.org"}, {})
    assert (oidc.identity, oidc.via) == ("ann@example.org", "oidc")
    proxy_only = Policy.from_secrets(
        {"dynacor": {"trusted_user_header": "X-Forwarded-User", "roles": ROLES}}
    )
    assert not proxy_only.single_user and not proxy_only.oidc
    assert resolve(proxy_only, {}, {}).mode == SIGNED_OUT
    assert resolve(proxy_only, {}, {"X-FORWARDED-USER": "ann@example.org"}).role == ANNOTATOR


@pytest.mark.parametrize(
    ("dynacor", "field"),
    [
        ({"roles": {"admin": ["a@b.c"]}}, "dynacor.roles.admin"),
        ({"roles": {"admins": "a@b.c"}}, "dynacor.roles.admins"),
        ({"roles": {"annotators": ["ok@b.c", ""]}}, "dynacor.roles.annotators"),
        ({"roles": ["a@b.c"]}, "dynacor.roles"),
        ({"trusted_user_header": ""}, "dynacor.trusted_user_header"),
    ],
)
def test_malformed_role_configuration_is_refused_with_the_field(dynacor, field):
    with pytest.raises(InputError, match=f"secrets.toml: field `{field}`"):
        Policy.from_secrets({"auth": AUTH, "dynacor": dynacor})


def pending_frame() -> pd.DataFrame:
    given = np.array([0, 0, 0, 1, 0, 2, 0])
    suggested = np.array([1, 1, 2, 0, 1, 0, 1])
    frame = pd.DataFrame({"index": np.arange(7), "id": np.arange(100, 107), "given_label": given,
                          "suggested_label": suggested, "noisy_score": [0.6, 0.9, 0.8, 0.7, 0.9, 0.5, 0.95],
                          "flagged": 1})  # fmt: skip
    return flagged_sorted(frame)


def test_groups_count_undecided_cards_in_class_order():
    pending = pending_frame()
    out = groups(pending)
    assert list(zip(out["given_label"], out["suggested_label"], out["cards"], strict=True)) == [
        (0, 1, 4), (0, 2, 1), (1, 0, 1), (2, 0, 1)]  # fmt: skip
    assert out["top_score"].iloc[0] == pytest.approx(0.95)
    assert groups(pending.iloc[:0]).empty


def test_grid_cards_are_one_group_most_noisy_first_and_decisions_carry_their_class():
    cards = grid_cards(pending_frame(), 0, 1, 3)
    assert cards["key"].tolist() == ["106", "101", "104"]  # 0.95, then the 0.9 tie in sample order
    items = grid_decisions(cards, ["106", "104"], "accept")
    assert items == [{"sample": "106", "decision": "accept", "label": 1},
                     {"sample": "104", "decision": "accept", "label": 1}]  # fmt: skip
    assert [i["label"] for i in grid_decisions(cards, ["101"], "keep")] == [0]
    assert [i["label"] for i in grid_decisions(cards, ["101"], "remove")] == [None]
    with pytest.raises(InputError, match="cards shown on the grid"):
        grid_decisions(cards, ["100"], "keep")  # in the group, but not on this page
    with pytest.raises(InputError, match="decision"):
        grid_decisions(cards, ["101"], "relabel")
