"""Keeping passwords and tokens out of everything raysweep prints, stores or hands to Ray.

Secrets reach raysweep three ways: MLflow's variables (``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``),
the user info of a URI (``postgresql://user:PASSWORD@db/mlflow``, ``http://TOKEN@host``) and a URI's query
(``...?password=...``, a presigned ``X-Amz-Signature``). Three functions cover them:

- :func:`redact` masks one URI before it is stored or printed;
- :func:`secret_values` collects the secret strings themselves;
- :func:`scrub` masks both in free text (an error line, a stored traceback, a log line), for text whose origin
  raysweep does not control (MLflow's and Ray's messages quote URIs and tokens verbatim).

The URIs this process connects to are registered with :func:`remember`, so :func:`scrub` finds their secrets
even where an error message quotes only a password.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

#: What replaces a secret.
MASK = "***"
#: Variables whose whole value is a secret.
SECRET_ENV = (
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "DATABRICKS_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
#: Variables holding URIs whose user info or query may carry a secret.
URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
#: Query keys whose values are secrets (matched as substrings, case-insensitive).
_SECRET_KEYS = ("password", "passwd", "pwd", "token", "secret", "key", "signature", "sig", "credential", "auth")
#: Shorter values are not hunted for in free text: masking every "pw" in a message hides more than it protects
#: (a URI carrying one is still masked, by its shape).
MIN_SECRET_LENGTH = 4
#: A URI in free text: scheme://, then anything up to whitespace or a quote/bracket that closes it.
_URI_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`()\[\]{},]+")

_remembered: set[str] = set()


def redact(uri: str | None) -> str | None:
    """``uri`` with its user info and its query (where passwords and tokens go) replaced by ``***``.

    ``postgresql://mlflow:pw@db:5432/mlflow?sslmode=require`` becomes ``postgresql://***@db:5432/mlflow?***``.
    Anything else (``sqlite:///mlflow.db``, ``databricks``, ``None``) comes back as it was.
    """
    if not uri or ("@" not in uri and "?" not in uri):
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:  # not a URI urllib can take apart (a bad IPv6 host): mask everything after the scheme
        scheme, sep, _ = uri.partition("://")
        return f"{scheme}{sep}{MASK}" if sep else MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = MASK if parts.query else ""
    path = parts.path
    if "@" in path and not parts.netloc:  # scheme:user:pw@host without // (urllib sees no netloc)
        path = f"{MASK}@{path.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc, query=query, path=path))


def remember(uri: str | None) -> None:
    """Know ``uri``'s secrets from now on in this process, so :func:`scrub` masks them wherever they appear."""
    if uri and redact(uri) != uri:
        _remembered.add(uri)


def secret_values(environ: Mapping[str, str] = os.environ, uris: Iterable[str | None] = ()) -> set[str]:
    """Every secret string known here: MLflow's password/token variables, and the passwords, tokens and secret
    query values of ``uris``, of the URIs in ``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI`` and of those
    :func:`remember` was given.

    Values come both as written and percent-decoded (a URI carries ``p%40ss`` for ``p@ss``).
    """
    values: set[str] = {environ[k] for k in SECRET_ENV if environ.get(k)}
    for uri in [*uris, *(environ.get(k) for k in URI_ENV), *_remembered]:
        values |= _uri_secrets(uri)
    return {v for raw in values for v in (raw, unquote(raw)) if v}


def scrub(text: str, uris: Iterable[str | None] = ()) -> str:
    """``text`` with every credentialed URI redacted and every known secret value replaced by ``***``.

    Args:
        text: Anything that may quote a URI or a secret: an error message, a traceback, a log line.
        uris: URIs whose secrets this text may carry beyond those :func:`secret_values` finds already.
    """
    if not text:
        return text
    uris = [u for u in uris if u]
    for uri in sorted(uris, key=len, reverse=True):  # whole known URIs first: their masked form stays readable
        masked = redact(uri)
        if masked != uri:
            text = text.replace(uri, masked)
    text = _URI_IN_TEXT.sub(lambda m: redact(m.group(0)) or "", text)
    for value in sorted(secret_values(uris=uris), key=len, reverse=True):
        if len(value) >= MIN_SECRET_LENGTH:
            text = text.replace(value, MASK)
    return text


def _uri_secrets(uri: str | None) -> set[str]:
    """The password (or, of an HTTP URI without one, the token: ``http://TOKEN@host``) and secret query values."""
    if not uri or ("@" not in uri and "?" not in uri):
        return set()
    try:
        parts = urlsplit(uri)
    except ValueError:
        return set()
    found: set[str] = set()
    netloc = parts.netloc or (parts.path if "@" in parts.path else "")
    if "@" in netloc:
        userinfo = netloc.rpartition("@")[0].lstrip("/")
        user, has_password, password = userinfo.partition(":")
        if has_password:
            found.add(password)
        elif parts.scheme in ("http", "https"):  # a lone user info is a token there, a user name elsewhere
            found.add(user)
    found |= {value for key, value in parse_qsl(parts.query, keep_blank_values=False)
              if any(word in key.lower() for word in _SECRET_KEYS)}
    return found


def without_userinfo(url: str) -> str:
    """``url`` without its user info: for requests whose credentials travel in headers, never in the URL."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
