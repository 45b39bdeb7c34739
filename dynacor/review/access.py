"""Who may do what in the review app: the sign-in policy read from the app's secrets, the person
signed in, the role they hold and the actions each role allows.

Pure functions on plain mappings: the app (``pages/_auth.py``) reads ``st.secrets``, ``st.user``
and the request's headers and hands them here, so the rules are tested without a browser.

Configuration (``.streamlit/secrets.toml``)::

    [auth]                      # streamlit's own OIDC settings: turns sign-in on
    redirect_uri = "https://review.example.org/oauth2callback"
    cookie_secret = "..."
    client_id = "..."
    client_secret = "..."
    server_metadata_url = "https://idp.example.org/.well-known/openid-configuration"

    [dynacor]
    trusted_user_header = "X-Forwarded-User"   # optional: a proxy signs people in

    [dynacor.roles]
    admins = ["lead@example.org"]
    annotators = ["*@example.org"]

Without ``[auth]`` and without ``trusted_user_header`` the app is in single-user mode: no sign-in,
every action allowed, the annotator types a name (local use).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from dynacor.errors import InputError

SECRETS = "secrets.toml"
ADMIN, ANNOTATOR = "admin", "annotator"
ROLES = (ADMIN, ANNOTATOR)
# "manage": set how a run is reviewed (single or double review) and decide its conflicts.
ACTIONS = ("review", "start", "cancel", "export", "manage")
ALLOWED = {ADMIN: frozenset(ACTIONS), ANNOTATOR: frozenset({"review"})}
ROLE_KEYS = {"admins": ADMIN, "annotators": ANNOTATOR}

SINGLE_USER, SIGNED_IN, SIGNED_OUT = "single-user", "signed-in", "signed-out"


@dataclass(frozen=True)
class Policy:
    """How people sign in and which role each holds.

    Attributes
    ----------
    oidc : True when an ``[auth]`` section configures streamlit's OIDC sign-in
    trusted_header : a request header naming the user, set by a proxy in front of the app; None
        when the app trusts no header
    admins, annotators : patterns matched against the email and the subject of whoever signs in
        (``fnmatch``, case-insensitive: ``"*"`` anyone signed in, ``"*@example.org"`` a domain)
    """

    oidc: bool = False
    trusted_header: str | None = None
    admins: tuple[str, ...] = ()
    annotators: tuple[str, ...] = ()

    @property
    def single_user(self) -> bool:
        return not self.oidc and not self.trusted_header

    @classmethod
    def from_secrets(cls, secrets: Mapping) -> Policy:
        """Read the policy from the app's secrets (a nested mapping, as ``st.secrets``).

        Raises `InputError` for a malformed ``[dynacor]`` section: a misspelt role list would
        otherwise lock everybody out without a word.
        """
        auth = secrets.get("auth")
        dynacor = secrets.get("dynacor") or {}
        if not isinstance(dynacor, Mapping):
            raise InputError(SECRETS, "dynacor", "a table", type(dynacor).__name__)
        header = dynacor.get("trusted_user_header")
        if header is not None and (not isinstance(header, str) or not header.strip()):
            raise InputError(
                SECRETS,
                "dynacor.trusted_user_header",
                "a header name such as X-Forwarded-User",
                repr(header),
            )
        roles = dynacor.get("roles") or {}
        if not isinstance(roles, Mapping):
            raise InputError(
                SECRETS, "dynacor.roles", "a table with admins and annotators", type(roles).__name__
            )
        unknown = sorted(set(roles) - set(ROLE_KEYS))
        if unknown:
            raise InputError(
                SECRETS,
                f"dynacor.roles.{unknown[0]}",
                f"one of {sorted(ROLE_KEYS)}",
                "an unknown key",
            )
        lists = {key: _patterns(roles.get(key, []), f"dynacor.roles.{key}") for key in ROLE_KEYS}
        return cls(oidc=bool(auth), trusted_header=header.strip() if header else None, **lists)


def _patterns(value: object, field: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise InputError(SECRETS, field, "a list of emails, subjects or patterns", repr(value))
    if not all(isinstance(v, str) and v.strip() for v in value):
        raise InputError(SECRETS, field, "non-empty strings", repr(value))
    return tuple(v.strip().casefold() for v in value)


@dataclass(frozen=True)
class Access:
    """Who is using the app, and how they got in.

    Attributes
    ----------
    mode : ``single-user`` (no sign-in configured), ``signed-in`` or ``signed-out``
    identity : what the review store records as the annotator: the signed-in email (lower case),
        else the subject, else the header's value; empty unless signed in
    role : ``admin``, ``annotator`` or None (single-user mode, signed out, or no role given)
    via : ``oidc``, ``header`` or empty
    """

    mode: str
    identity: str = ""
    role: str | None = None
    via: str = ""

    def can(self, action: str) -> bool:
        """Whether this person may ``action`` (one of `ACTIONS`). Single-user mode allows all."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
        if self.mode == SINGLE_USER:
            return True
        return self.mode == SIGNED_IN and self.role is not None and action in ALLOWED[self.role]


def identity_of(claims: Mapping) -> str:
    """The annotator's name in the review store: the email (lower case) when the provider gives
    one, else the subject; empty when neither."""
    email = str(claims.get("email") or "").strip()
    return email.casefold() if email else str(claims.get("sub") or "").strip()


def role_of(names: tuple[str, ...] | list[str], policy: Policy) -> str | None:
    """The role of someone known by ``names`` (email, subject): admin when any name matches an
    admin pattern, else annotator when one matches an annotator pattern, else None."""
    wanted = [n.strip().casefold() for n in names if n and n.strip()]
    for role, patterns in ((ADMIN, policy.admins), (ANNOTATOR, policy.annotators)):
        if any(fnmatchcase(name, pattern) for name in wanted for pattern in patterns):
            return role
    return None


def resolve(policy: Policy, user: Mapping, headers: Mapping) -> Access:
    """Who is using the app under ``policy``.

    Parameters
    ----------
    policy : from `Policy.from_secrets`
    user : streamlit's ``st.user`` as a mapping (``is_logged_in`` and the provider's claims)
    headers : the request's headers (names compared case-insensitively)

    The trusted header, when configured and present, wins over the OIDC sign-in: behind such a
    proxy the header is the identity the proxy checked.
    """
    if policy.single_user:
        return Access(SINGLE_USER)
    if policy.trusted_header:
        wanted = policy.trusted_header.casefold()
        value = next(
            (str(v).strip() for k, v in headers.items() if str(k).casefold() == wanted), ""
        )
        if value:
            return Access(SIGNED_IN, value, role_of([value], policy), "header")
    if policy.oidc and user.get("is_logged_in"):
        identity = identity_of(user)
        if identity:
            names = [str(user.get("email") or ""), str(user.get("sub") or "")]
            return Access(SIGNED_IN, identity, role_of(names, policy), "oidc")
    return Access(SIGNED_OUT)
