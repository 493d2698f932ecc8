"""``Client`` methods: the master, logins, users, their tokens and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from stalwart.client._base import ClientBase, _segment
from stalwart.client.models import (
    AuditEvent,
    AuditEventPage,
    CreatedToken,
    Login,
    MasterInfo,
    Page,
    TokenInfo,
    User,
)


class Accounts(ClientBase):
    """The master, logins, users, their tokens and the audit log."""

    # --- master -------------------------------------------------------------------------------

    def master_info(self) -> MasterInfo:
        """Version, cluster id and name; works without logging in.

        Example::

            print(Client().master_info().cluster_name)
        """
        return MasterInfo.from_json(self._json("GET", "/api/v1/master", auth=False))

    def experiment_schema(self) -> dict[str, Any]:
        """The JSON Schema of the experiment config, e.g. for editor completion.

        Example::

            schema = Client().experiment_schema()
            print(sorted(schema["properties"]))
        """
        result: dict[str, Any] = self._json("GET", "/api/v1/schemas/experiment")
        return result

    # --- auth and users -----------------------------------------------------------------------

    def login(self, username: str, password: str) -> Login:
        """Exchange a password for a token; later calls on this client use it.

        The token is not cached on disk; ``auth.save_token`` does that (as ``stalwart user login``).

        Example::

            client = Client("http://master:8080")
            client.login("admin", "secret")
            print(client.me().username)
        """
        body = {"username": username, "password": password}
        login = Login.from_json(self._json("POST", "/api/v1/auth/login", json=body, auth=False))
        self.token = login.token
        return login

    def logout(self) -> None:
        """Revoke the token in use on the master and forget it on this client.

        Example::

            Client().logout()
        """
        self._session.request("POST", "/api/v1/auth/logout")
        self.token = None

    def me(self) -> User:
        """The user the token belongs to.

        Example::

            print(Client().me().admin)
        """
        return User.from_json(self._json("GET", "/api/v1/me"))

    def list_users(self) -> list[User]:
        """Every user account.

        Example::

            names = [u.username for u in Client().list_users()]
        """
        return [User.from_json(item) for item in self._json("GET", "/api/v1/users")]

    def create_user(self, username: str, password: str, *, admin: bool = False) -> User:
        """Create an account (admins only); ``ConflictError`` if the name is taken.

        Example::

            Client().create_user("alice", "a long passphrase", admin=False)
        """
        body = {"username": username, "password": password, "admin": admin}
        return User.from_json(self._json("POST", "/api/v1/users", json=body))

    # --- people's tokens and accounts ---------------------------------------------------------

    def create_token(self, description: str = "", expires_in_days: float | None = None) -> CreatedToken:
        """An API token that acts as you, for scripts and CI (``$STALWART_TOKEN``); the secret is
        in the answer only this once. Without ``expires_in_days`` it never expires.

        Revoking it, a password change or deactivating the account ends it.

        Example::

            created = Client().create_token("nightly job", expires_in_days=30)
            print(created.info.id, created.token)
        """
        body: dict[str, Any] = {"description": description}
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        return CreatedToken.from_json(self._json("POST", "/api/v1/tokens", json=body))

    def list_tokens(self, all_users: bool = False) -> list[TokenInfo]:
        """Your live sessions and API tokens, newest first, never their secrets.

        ``all_users`` lists everyone's when you are a cluster admin (only yours otherwise).

        Example::

            stale = [t.id for t in Client().list_tokens() if t.kind == "api" and t.last_used_at is None]
        """
        params = {"all_users": all_users or None}
        return [TokenInfo.from_json(item) for item in self._json("GET", "/api/v1/tokens", params=params)]

    def revoke_token(self, token_id: int) -> None:
        """End one of your sessions or API tokens (a cluster admin: anyone's); ``NotFoundError`` for
        a token that is not yours to see.

        Example::

            Client().revoke_token(42)
        """
        self._session.request("DELETE", f"/api/v1/tokens/{int(token_id)}")

    def update_user(
        self,
        username: str,
        *,
        active: bool | None = None,
        admin: bool | None = None,
        password: str | None = None,
    ) -> User:
        """Deactivate or reactivate, promote or demote an account, or reset its password (cluster
        admins only); None leaves a field as it is.

        Deactivating ends every session and API token of the user; ``ConflictError`` for the last
        active admin.

        Example::

            Client().update_user("alice", active=False)
        """
        body = {
            key: value
            for key, value in (("active", active), ("admin", admin), ("password", password))
            if value is not None
        }
        return User.from_json(self._json("PATCH", f"/api/v1/users/{_segment(username)}", json=body))

    def change_password(self, old_password: str, new_password: str) -> None:
        """Change your own password; your other sessions and API tokens are revoked, this one stays.

        ``ForbiddenError`` if ``old_password`` is wrong.

        Example::

            Client().change_password("old secret", "a new long passphrase")
        """
        body = {"old_password": old_password, "new_password": new_password}
        self._session.request("POST", "/api/v1/me/password", json=body)

    # --- audit log ----------------------------------------------------------------------------

    def list_audit_events(
        self,
        username: str | None = None,
        action: str | None = None,
        since: datetime | str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> AuditEventPage:
        """One page of the audit log, newest first (cluster admins only).

        ``action`` is exact (``auth.login``) or a prefix ending in '.' (``experiment.``); ``since``
        a datetime or an ISO 8601 string.

        Example::

            page = Client().list_audit_events(action="auth.", limit=20)
            refused = [e for e in page.items if e.outcome != "ok"]
        """
        params: dict[str, Any] = {
            "username": username,
            "action": action,
            "since": since.isoformat() if isinstance(since, datetime) else since,
            "limit": limit,
            "offset": offset,
        }
        return Page.parse(self._json("GET", "/api/v1/audit", params=params), AuditEvent.from_json)
