"""Secrets: password hashing, API keys, session tokens, and encryption at rest.

Passwords get a slow salted hash (Argon2id) computed in gevent's thread pool:
inline, each hash would stall every greenlet of the process. API keys and
session tokens are 256-bit random values, so a fast SHA-256 digest compared in
constant time is enough (DESIGN.md, Secrets).
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
import secrets

import gevent
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's Argon2id baseline (m=19 MiB, t=2, p=1): slow for an attacker, ~20 ms for us.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# Verifying a password against this hash costs as much as a real check, so an
# unknown username takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("dummy-password-for-timing-0")

PASSWORD_RULE = "must have at least 8 characters, with a digit, a lower-case and an upper-case letter"  # noqa: S105
KEY_PREFIX = "sdk"


def password_problem(password: str) -> str | None:
    """Why `password` breaks the documented policy, or None when it is acceptable."""
    if (
        len(password) < 8
        or not re.search(r"\d", password)
        or not re.search(r"[a-z]", password)
        or not re.search(r"[A-Z]", password)
    ):
        return PASSWORD_RULE
    if len(password) > 1024:
        return "must have at most 1024 characters"
    return None


SIP_PASSWORD_RULE = "must have at least 12 characters, with letters and digits"  # noqa: S105


def sip_password_problem(password: str) -> str | None:
    """Why `password` is too weak for a SIP device, or None.

    Stricter than a login password: SIP digest authentication is exposed to
    the whole network and its a1-hash (MD5) is cheap to attack offline.
    Printable ASCII only, since phones' keypads and provisioning files are.
    """
    if len(password) < 12 or not re.search(r"\d", password) or not re.search(r"[A-Za-z]", password):
        return SIP_PASSWORD_RULE
    if len(password) > 128:
        return "must have at most 128 characters"
    if not re.fullmatch(r"[\x21-\x7e]+", password):
        return "may contain printable ASCII characters only, without spaces"
    return None


def sip_a1_hash(username: str, domain: str, password: str) -> str:
    """FreeSWITCH's `a1-hash` directory parameter: md5("user:domain:password") (the SIP realm is the domain)."""
    return hashlib.md5(f"{username}:{domain}:{password}".encode(), usedforsecurity=False).hexdigest()


def _off_loop(fn, *args):
    return gevent.get_hub().threadpool.apply(fn, args)


def hash_password(password: str) -> str:
    return _off_loop(_hasher.hash, password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return _off_loop(check)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_api_key() -> tuple[str, str, str]:
    """A fresh key as (key shown once, public prefix, digest to store)."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)  # 256 bits
    return f"{KEY_PREFIX}_{prefix}_{secret}", prefix, digest(secret)


def split_api_key(key: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_token() -> str:
    return secrets.token_urlsafe(32)


def random_password(length: int = 16) -> str:
    """A generated password that satisfies the policy."""
    while True:
        candidate = secrets.token_urlsafe(length)[:length]
        if password_problem(candidate) is None:
            return candidate


# --- encryption at rest (webhook secrets) -------------------------------------------------------

SECRET_KEY_ENV = "SWITCHDESK_SECRET_KEY"  # noqa: S105
SECRET_KEY_FILE_ENV = "SWITCHDESK_SECRET_KEY_FILE"  # noqa: S105
KEY_FILE_NAME = "switchdesk.key"
_key_file: str | None = None


class NoSecretKey(RuntimeError):
    """No key to encrypt webhook secrets with: neither the environment nor a key file gives one."""


def default_key_file(db_url: str) -> str | None:
    """Where the key lives without SWITCHDESK_SECRET_KEY: SWITCHDESK_SECRET_KEY_FILE, else
    `switchdesk.key` beside a SQLite database. PostgreSQL has no default: the boxes sharing it must
    share one key, so the admin names it."""
    if os.environ.get(SECRET_KEY_FILE_ENV):
        return os.path.abspath(os.environ[SECRET_KEY_FILE_ENV])
    if db_url.startswith("sqlite:///") and ":memory:" not in db_url:
        path = db_url[len("sqlite:///"):].split("?", 1)[0]
        return os.path.join(os.path.dirname(os.path.abspath(path)), KEY_FILE_NAME)
    return None


def use_key_file(path: str | None) -> None:
    """Read the key from `path` when the environment has none (set once at start-up)."""
    global _key_file
    _key_file = path
    _file_key.cache_clear()


def create_key_file(path: str) -> bool:
    """A new random key in `path`, readable by this user alone; False when the file already exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    return True


def _raw_key() -> str | None:
    return os.environ.get(SECRET_KEY_ENV) or _file_key()


@functools.lru_cache(maxsize=1)
def _file_key() -> str | None:
    if _key_file:
        try:
            with open(_key_file) as key_file:
                return key_file.read().strip() or None
        except OSError:
            return None
    return None


def has_secret_key() -> bool:
    return _raw_key() is not None


def derived_key(purpose: str) -> bytes | None:
    """A key for `purpose` derived from the installation's secret key (None without one).

    The boxes of one database share that key already (their webhook secrets must decrypt everywhere),
    so it also authenticates them to each other (engine.boxes); a derived key keeps the two uses apart.
    """
    raw = _raw_key()
    if not raw:
        return None
    return hmac.new(raw.encode(), f"switchdesk {purpose}".encode(), hashlib.sha256).digest()


def _fernet():
    from cryptography.fernet import Fernet

    raw = _raw_key()
    if not raw:
        raise NoSecretKey(f"no key to encrypt webhook secrets at rest: run `switchdesk init` (it writes "
                          f"{KEY_FILE_NAME} beside a SQLite database) or set {SECRET_KEY_ENV} or {SECRET_KEY_FILE_ENV}")
    # Any string works as the key: it is stretched to Fernet's 32 bytes.
    key = base64.urlsafe_b64encode(hashlib.sha256(raw.encode()).digest())
    return Fernet(key)


def encrypt_secret(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def decrypt_secret(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()
