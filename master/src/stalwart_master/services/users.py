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

from stalwart_master.db.orm import DEFAULT_WORKSPACE_ID, Token, User, WorkspaceMember, utcnow
from stalwart_master.errors import Conflict, ErrorList, Forbidden, NotFound, Unauthorized

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
    _password_problems(errors, password)
    errors.raise_if_any(title="Invalid user")


def create_user(session: Session, username: str, password: str, *, admin: bool = False) -> User:
    _validate_new_user(username, password)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(username=username, password_hash=_hasher.hash(password), admin=admin)
    session.add(user)
    session.flush()
    # Everyone starts as an editor of the default workspace: they see what is shared there and
    # change only their own. An admin can change the role or keep the user to other workspaces.
    session.add(WorkspaceMember(workspace_id=DEFAULT_WORKSPACE_ID, user_id=user.id, role="editor"))
    session.flush()
    return user


def get_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"user {username!r} not found")
    return user


def _password_problems(errors: ErrorList, password: str) -> None:
    if len(password) < 8:
        errors.add("password", "must be at least 8 characters")


def _check_password(password: str) -> None:
    errors = ErrorList()
    _password_problems(errors, password)
    errors.raise_if_any(title="Invalid password")


def set_password(session: Session, user: User, password: str, *, keep_token_id: int | None = None) -> None:
    """A new password ends every other session and API token of the user: a leak stops here."""
    _check_password(password)
    user.password_hash = _hasher.hash(password)
    revoke_user_tokens(session, user.id, keep_token_id=keep_token_id)


def change_own_password(session: Session, user: User, old: str, new: str, token_id: int) -> None:
    if not _hasher.verify(old, user.password_hash):
        raise Forbidden("the current password is wrong")
    set_password(session, user, new, keep_token_id=token_id)


def _other_active_admins(session: Session, user: User) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(User).where(User.admin, User.active, User.id != user.id)
        )
        or 0
    )


def update_user(
    session: Session,
    user: User,
    *,
    active: bool | None = None,
    admin: bool | None = None,
    password: str | None = None,
) -> User:
    """An admin's changes to an account; the last active admin cannot be removed or demoted."""
    if (
        (active is False or admin is False)
        and user.admin
        and user.active
        and not _other_active_admins(session, user)
    ):
        raise Conflict(f"{user.username!r} is the last active admin")
    if password is not None:
        set_password(session, user, password)
    if admin is not None:
        user.admin = admin
    if active is not None:
        user.active = active
        if not active:
            revoke_user_tokens(session, user.id)
    session.flush()
    return user


def revoke_user_tokens(session: Session, user_id: int, *, keep_token_id: int | None = None) -> None:
    """Sessions and API tokens; agent and allocation tokens are the cluster's, not the person's."""
    query = update(Token).where(
        Token.user_id == user_id, Token.kind.in_(("user", "api")), Token.revoked_at.is_(None)
    )
    if keep_token_id is not None:
        query = query.where(Token.id != keep_token_id)
    session.execute(query.values(revoked_at=utcnow()))


def create_api_token(
    session: Session, user: User, description: str, expires_in_days: float | None
) -> tuple[str, Token]:
    return mint_token(
        session,
        user,
        None if expires_in_days is None else expires_in_days * 24,
        "api",
        description=description,
    )


def list_tokens(session: Session, user: User | None) -> list[Token]:
    """Live sessions and API tokens of ``user`` (of everyone with None), newest first."""
    query = select(Token).where(
        Token.kind.in_(("user", "api")),
        Token.revoked_at.is_(None),
        (Token.expires_at.is_(None)) | (Token.expires_at > utcnow()),
    )
    if user is not None:
        query = query.where(Token.user_id == user.id)
    return list(session.scalars(query.order_by(Token.id.desc())))


def revoke_users_token(session: Session, actor: User, token_id: int) -> Token:
    """Owners revoke their own; cluster admins anyone's. Another user's token is not found."""
    token = session.get(Token, token_id)
    if token is None or token.kind not in ("user", "api") or (token.user_id != actor.id and not actor.admin):
        raise NotFound(f"token {token_id} not found")
    revoke_token(session, token_id)
    return token


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
    return mint_token(
        session,
        user,
        ttl_hours,
        kind,
        agent_id=agent_id,
        allocation_id=allocation_id,
        description=description,
    )[0]


def mint_token(
    session: Session,
    user: User,
    ttl_hours: float | None,
    kind: str,
    *,
    agent_id: str | None = None,
    allocation_id: object = None,
    description: str = "",
) -> tuple[str, Token]:
    """The secret (shown once) and the stored row, which keeps only its hash."""
    secret = secrets.token_urlsafe(32)
    token = Token(
        user_id=user.id,
        token_hash=hash_token(secret),
        kind=kind,
        agent_id=agent_id,
        allocation_id=allocation_id,
        description=description,
        expires_at=None if ttl_hours is None else utcnow() + dt.timedelta(hours=ttl_hours),
    )
    session.add(token)
    session.flush()
    return secret, token


def authenticate(session: Session, secret: str) -> Token:
    """The live token for ``secret``; unknown, expired and revoked ones are all plain 401s."""
    token = session.scalar(select(Token).where(Token.token_hash == hash_token(secret)))
    if (
        token is None
        or token.revoked_at is not None
        or (token.expires_at is not None and token.expires_at <= utcnow())
        # A deactivated person is out at once; the agents and runs they started are the cluster's.
        or (not token.user.active and token.kind in ("user", "api"))
    ):
        raise Unauthorized("invalid, expired or revoked token")
    return token


def use_is_stale(token: Token) -> bool:
    """A person's token whose last use is unrecorded or over a minute old (recording costs a write)."""
    last = token.last_used_at
    return token.kind in ("user", "api") and (last is None or utcnow() - last > dt.timedelta(minutes=1))


def record_use(session: Session, token: Token) -> None:
    session.execute(update(Token).where(Token.id == token.id).values(last_used_at=utcnow()))


def revoke_token(session: Session, token_id: int) -> None:
    session.execute(
        update(Token).where(Token.id == token_id, Token.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
