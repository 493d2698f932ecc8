"""Users and bearer tokens: Argon2 password hashes, and tokens whose secret the database never sees."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from dataclasses import dataclass

from pwdlib import PasswordHash
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from stalwart_master.db.orm import Token, User, utcnow
from stalwart_master.errors import Conflict, ErrorList, Unauthorized

log = logging.getLogger(__name__)

_hasher = PasswordHash.recommended()
# Verified against when the user does not exist, so a wrong user name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("stalwart-timing-equaliser")
ADMIN_USERNAME = "admin"


@dataclass(frozen=True)
class IssuedToken:
    secret: str
    user: User


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _validate_new_user(username: str, password: str) -> None:
    errors = ErrorList()
    if (
        not username
        or len(username) > 128
        or not username.replace("-", "").replace("_", "").replace(".", "").isalnum()
    ):
        errors.add("username", "must be 1-128 letters, digits, '-', '_' or '.'")
    if len(password) < 8:
        errors.add("password", "must be at least 8 characters")
    errors.raise_if_any(title="Invalid user")


def create_user(session: Session, username: str, password: str, *, admin: bool = False) -> User:
    _validate_new_user(username, password)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(username=username, password_hash=_hasher.hash(password), admin=admin)
    session.add(user)
    session.flush()
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def ensure_admin(session: Session, password: str | None) -> str | None:
    """Create ``admin`` on an empty database; returns the password only when one was just set."""
    if session.scalar(select(func.count()).select_from(User)):
        return None
    password = password or secrets.token_urlsafe(12)
    create_user(session, ADMIN_USERNAME, password, admin=True)
    return password


def login(session: Session, username: str, password: str, ttl_hours: int) -> IssuedToken:
    user = session.scalar(select(User).where(User.username == username))
    if user is None or not user.active:
        _hasher.verify(password, _DUMMY_HASH)
        raise Unauthorized("wrong user name or password")
    valid, new_hash = _hasher.verify_and_update(password, user.password_hash)
    if not valid:
        raise Unauthorized("wrong user name or password")
    if new_hash is not None:  # parameters changed since it was hashed: upgrade it transparently
        user.password_hash = new_hash
    return IssuedToken(secret=issue_token(session, user, ttl_hours), user=user)


def issue_token(
    session: Session,
    user: User,
    ttl_hours: float | None,
    kind: str = "user",
    *,
    agent_id: str | None = None,
    allocation_id: object = None,
    description: str = "",
) -> str:
    """Mint a token; the secret is returned once and only its hash is kept."""
    secret = secrets.token_urlsafe(32)
    session.add(
        Token(
            user_id=user.id,
            token_hash=hash_token(secret),
            kind=kind,
            agent_id=agent_id,
            allocation_id=allocation_id,
            description=description,
            expires_at=None if ttl_hours is None else utcnow() + dt.timedelta(hours=ttl_hours),
        )
    )
    session.flush()
    return secret


def authenticate(session: Session, secret: str) -> Token:
    """The live token for ``secret``; unknown, expired and revoked ones are all plain 401s."""
    token = session.scalar(select(Token).where(Token.token_hash == hash_token(secret)))
    if (
        token is None
        or token.revoked_at is not None
        or (token.expires_at is not None and token.expires_at <= utcnow())
        or not token.user.active
    ):
        raise Unauthorized("invalid, expired or revoked token")
    return token


def revoke_token(session: Session, token_id: int) -> None:
    session.execute(
        update(Token).where(Token.id == token_id, Token.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
