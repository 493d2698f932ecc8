"""Master settings, read from ``STALWART_*`` environment variables (one class per concern)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from stalwart_master.scheduler.placement import PreemptionPolicy

_PLACEHOLDERS = {"admin", "changeme", "change-me", "password", "secret", "stalwart"}


class DatabaseSettings(BaseSettings):
    """PostgreSQL is the only dialect; ``url`` may be a plain ``postgresql://`` URL."""

    model_config = SettingsConfigDict(env_prefix="STALWART_DATABASE_")

    url: str = ""
    pool_size: int = 10

    @property
    def sqlalchemy_url(self) -> str:
        if not self.url:
            raise RuntimeError(
                "STALWART_DATABASE_URL is not set; point it at PostgreSQL or run `stalwart deploy local up`"
            )
        scheme, _sep, rest = self.url.partition("://")
        if scheme in ("postgres", "postgresql", "postgresql+psycopg"):
            return f"postgresql+psycopg://{rest}"
        raise RuntimeError(f"STALWART_DATABASE_URL must be a postgresql:// URL, got scheme {scheme!r}")


class RedisSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STALWART_REDIS_")

    url: str = "redis://127.0.0.1:6379/0"
    # A task not acknowledged this long after delivery (its worker died) is delivered again.
    visibility_timeout_seconds: float = Field(default=3600.0, gt=0)


class GCSettings(BaseSettings):
    """Checkpoint garbage collection (``STALWART_GC_*``; ``STALWART_GC__*`` works too)."""

    model_config = SettingsConfigDict(env_prefix="STALWART_GC_")

    # Unreferenced chunks younger than this survive a sweep: a save in flight may still need them.
    chunk_grace_seconds: float = Field(default=600.0, ge=0)
    # How often the master looks for GC requests the broker never got (e.g. Redis was down).
    republish_interval_seconds: float = Field(default=5.0, gt=0)
    # A published request still not done after this long is published again (the message was lost).
    republish_after_seconds: float = Field(default=900.0, gt=0)
    # A delivery that finds another GC of the same experiment running tries again this much later.
    busy_retry_seconds: float = Field(default=5.0, gt=0)
    # Done requests are forgotten after this many days.
    keep_done_days: float = Field(default=7.0, gt=0)
    # Tests only: sleep between deleting manifests and marking checkpoints DELETED.
    test_pause_seconds: float = Field(default=0.0, ge=0)


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STALWART_")

    # Used once, when the first start creates the admin user; otherwise a password is generated.
    admin_password: str | None = None
    token_ttl_hours: int = Field(default=24 * 30, ge=1)


class LoginSettings(BaseSettings):
    """Login throttling (``STALWART_LOGIN_*``): failures per user name and per client address."""

    model_config = SettingsConfigDict(env_prefix="STALWART_LOGIN_")

    # This many failures inside the window locks the user name (or address) out until it slides by.
    max_failures_per_user: int = Field(default=10, ge=1)
    max_failures_per_address: int = Field(default=50, ge=1)
    window_seconds: float = Field(default=300.0, gt=0)


class StorageSettings(BaseSettings):
    """Checkpoint storage the master resolves itself (``STALWART_STORAGE_*``, JSON values).

    ``named``: storages an experiment picks with ``checkpoint_storage: {name: team-s3}``. Their
    credentials stay here, out of experiment configs, and go only to the runs of experiments that
    name them, e.g. STALWART_STORAGE_NAMED='{"team-s3": {"type": "s3", "bucket": "ckpt", ...}}'.
    ``endpoint_allowlist``: S3 endpoints (``scheme://host[:port]``) an experiment config may name;
    the master and its workers contact no other. No ``endpoint_url`` means AWS itself, always allowed.
    ``shared_fs_roots``: directories an experiment's ``host_path`` (or a ``directory`` storage's
    ``container_path``) must lie in; the data dir's ``checkpoints`` is always one.
    Storages the operator wrote (named ones, STALWART_EXPERIMENT_DEFAULTS) are allowed as written.
    """

    model_config = SettingsConfigDict(env_prefix="STALWART_STORAGE_")

    named: dict[str, dict[str, Any]] = Field(default_factory=dict)
    endpoint_allowlist: list[str] = Field(default_factory=list)
    shared_fs_roots: list[Path] = Field(default_factory=list)

    @field_validator("named")
    @classmethod
    def _named_storages_are_valid(cls, named: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """A misspelt named storage stops the master at start, not a trial at its first save."""
        from stalwart_master.expconf.model import validate_named_storage

        return {name: validate_named_storage(name, storage) for name, storage in named.items()}

    @field_validator("endpoint_allowlist")
    @classmethod
    def _endpoints_are_urls(cls, endpoints: list[str]) -> list[str]:
        for endpoint in endpoints:
            if not endpoint.startswith(("http://", "https://")):
                raise ValueError(f"{endpoint!r} is not an http:// or https:// URL")
        return endpoints

    @field_validator("shared_fs_roots")
    @classmethod
    def _roots_are_absolute(cls, roots: list[Path]) -> list[Path]:
        for root in roots:
            if not root.expanduser().is_absolute():
                raise ValueError(f"{str(root)!r} is not an absolute path")
        return [root.expanduser() for root in roots]


class TLSSettings(BaseSettings):
    """The master's own TLS (``STALWART_TLS_*``): it serves HTTPS when both files are given."""

    model_config = SettingsConfigDict(env_prefix="STALWART_TLS_")

    # PEM files; the certificate file may hold the whole chain, server certificate first.
    cert: Path | None = None
    key: Path | None = None
    # Strict-Transport-Security max-age on HTTPS responses; 0 sends none (e.g. while trying a cert).
    hsts_max_age_seconds: int = Field(default=365 * 24 * 3600, ge=0)

    def check(self) -> None:
        """Raise ``ValueError`` with one line saying why these files cannot serve TLS.

        Checked before the server binds, so a typo in a path or a key of another certificate is
        one line at start instead of uvicorn's traceback (or a prompt for a key password).
        """
        if self.cert is None and self.key is None:
            return
        if self.key is None:
            raise ValueError("--tls-cert (STALWART_TLS_CERT) was given without --tls-key (STALWART_TLS_KEY)")
        if self.cert is None:
            raise ValueError("--tls-key (STALWART_TLS_KEY) was given without --tls-cert (STALWART_TLS_CERT)")
        for what, path in (("certificate", self.cert), ("key", self.key)):
            try:
                path.read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot read the TLS {what} {path}: {exc.strerror or exc}") from exc
        import ssl

        def refuse_password() -> str:
            # An encrypted key must fail here with a message, not make OpenSSL prompt on a tty.
            raise ValueError("the private key is encrypted")

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.cert, self.key, password=refuse_password)
        except (ssl.SSLError, ValueError) as exc:
            raise ValueError(
                f"TLS certificate {self.cert} and key {self.key} do not load together "
                f"(PEM, matching, key not encrypted): {exc}"
            ) from exc


class LimitSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STALWART_")

    max_context_bytes: int = 96 * 1024 * 1024
    # What an uploaded context may unpack to, checked while it is decompressed (a 1 MB gzip can
    # hold gigabytes): bytes of the tar stream inside the gzip, members, and directory levels.
    context_max_unpacked_bytes: int = Field(default=1024**3, ge=1)
    context_max_members: int = Field(default=10_000, ge=1)
    context_max_depth: int = Field(default=32, ge=1)
    max_config_bytes: int = 1024 * 1024
    max_page_limit: int = 1000
    # Trials one experiment may run in all (STALWART_MAX_TRIALS): a typo such as an extra zero
    # in max_trials or a grid count must be refused, not make the master create millions of rows.
    max_trials: int = Field(default=10_000, ge=1)


class Settings(BaseSettings):
    """Everything the master reads from its environment."""

    # "__" also reaches nested sections, e.g. STALWART_GC__CHUNK_GRACE_SECONDS.
    model_config = SettingsConfigDict(env_prefix="STALWART_", env_nested_delimiter="__")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path("~/.stalwart")
    # The built web UI (index.html and assets/); unset: the package's copy, else the repo's webui/dist.
    webui_dir: Path | None = None
    cluster_name: str = "stalwart"
    log_level: str = "INFO"
    # An agent silent this long is lost: its runs end and its trials resume elsewhere.
    agent_reconnect_wait_seconds: float = Field(default=25.0, gt=0)
    scheduler_tick_seconds: float = Field(default=1.0, gt=0)
    # A preempted run still alive this long after the request is killed, and its trial resumes from
    # its latest checkpoint; an experiment's ``preemption_timeout`` overrides it.
    preemption_timeout_seconds: float = Field(default=300.0, gt=0)
    # Priority preemption (Determined's ``preemption: true``): a waiting trial stops lower-priority
    # ones of its pool. ``pool_preemption`` sets it per pool, e.g. STALWART_POOL_PREEMPTION='{"gpu": true}'.
    scheduler_preemption: bool = False
    pool_preemption: dict[str, bool] = Field(default_factory=dict)
    # Merged under every submitted experiment config (the user's values win), e.g. checkpoint storage.
    experiment_defaults: dict[str, Any] = Field(default_factory=dict)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    gc: GCSettings = Field(default_factory=GCSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    login: LoginSettings = Field(default_factory=LoginSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    tls: TLSSettings = Field(default_factory=TLSSettings)

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> Settings:
        """Outside development a guessable admin password is refused at start, not discovered later."""
        password = self.auth.admin_password
        weak = password is not None and (password.lower() in _PLACEHOLDERS or len(password) < 12)
        if self.environment == "production" and weak:
            raise ValueError(
                "STALWART_ADMIN_PASSWORD is a placeholder or shorter than 12 characters; "
                "set a real one or unset it to have one generated"
            )
        return self

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("webui_dir")
    @classmethod
    def _expand_webui(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()

    def effective_experiment_defaults(self) -> dict[str, Any]:
        """Cluster defaults; checkpoints go under the data dir unless the operator says otherwise."""
        defaults = dict(self.experiment_defaults)
        defaults.setdefault(
            "checkpoint_storage",
            {"type": "shared_fs", "host_path": str((self.data_dir / "checkpoints").resolve())},
        )
        return defaults

    def preemption_policy(self) -> PreemptionPolicy:
        """The scheduler's preemption rules, from the three settings above: the scheduler and the
        resource-pools route read the same policy."""
        import datetime as dt

        from stalwart_master.scheduler.placement import PreemptionPolicy

        return PreemptionPolicy(
            timeout=dt.timedelta(seconds=self.preemption_timeout_seconds),
            default=self.scheduler_preemption,
            pools=self.pool_preemption,
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
