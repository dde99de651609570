"""Typed settings, read from the environment (and an optional .env file) once, at the edge."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .chainhook.models import MAX_NETWORK_CHARS


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("timebank-realtime"))


class _Environment(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      frozen=True)


# Each command reads (and validates) only the settings of its class, so that, say, a bad
# SOCKET_AUTH_SECRET does not stop a migration, and its --help lists them from these fields.


class AddressSettings(_Environment):
    """Where ``serve`` listens, and so where ``tail`` finds it."""

    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=0, le=65535)


class LoggingSettings(_Environment):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"


class DatabaseSettings(LoggingSettings):
    """All that ``migrate`` and ``import`` read: the database, and logging."""

    database_url: str | None = None
    timebank_data_dir: Path = Field(default_factory=default_data_dir)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    db_startup_retry_seconds: float = Field(default=30.0, ge=0)

    @field_validator("database_url", mode="before")
    @classmethod
    def _empty_url_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _postgresql_url(cls, value: str | None) -> str | None:
        # Anything else would be retried as a connection failure until DB_STARTUP_RETRY_SECONDS.
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("DATABASE_URL must be a postgresql:// URL")
        return value

    @property
    def embedded_pgdata(self) -> Path:
        return self.timebank_data_dir / "postgres"


class ImportSettings(DatabaseSettings):
    """All that ``import`` reads: ``migrate``'s, and how deliveries are read."""

    # uuid=network pairs: the network of a Chainhook's deliveries, over what its payloads say.
    chainhook_networks: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)

    @field_validator("chainhook_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        networks: dict[str, str] = {}
        for number, pair in enumerate(filter(None, (part.strip() for part in value.split(","))), start=1):
            uuid, equals, network = (text.strip() for text in pair.partition("="))
            if not (uuid and equals and network) or len(network) > MAX_NETWORK_CHARS:
                raise ValueError(f"CHAINHOOK_NETWORKS takes uuid=network pairs separated by commas "
                                 f"(a network of at most {MAX_NETWORK_CHARS} characters); pair {number} is not one")
            networks[uuid] = network.lower()
        return networks


class Settings(ImportSettings, AddressSettings):
    """Everything ``serve`` reads. Every setting is documented in .env.example; keep the two in step."""

    # Server processes sharing the port (SO_REUSEPORT); unset: one per core (``serve --workers`` overrides).
    workers: int | None = Field(default=None, ge=1)

    chainhook_webhook_secret: SecretStr | None = None
    max_payload_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    stream_delivery_bytes: int = Field(default=8 * 1024 * 1024, ge=0)

    cors_allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    socket_ping_interval_seconds: float = Field(default=25.0, gt=0)
    socket_ping_timeout_seconds: float = Field(default=20.0, gt=0)
    socket_auth_secret: SecretStr | None = None
    heartbeat_seconds: float = Field(default=15.0, gt=0)
    max_subscriptions_per_connection: int = Field(default=100, ge=1)
    max_filter_values: int = Field(default=100, ge=1)
    subscribe_rate_per_second: float = Field(default=10.0, gt=0)
    max_socket_message_bytes: int = Field(default=64 * 1024, ge=1024)
    slow_consumer_backlog: int = Field(default=1000, ge=1)
    replay_batch_size: int = Field(default=500, ge=1, le=10_000)

    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)

    tailer_poll_seconds: float = Field(default=1.0, gt=0)
    tailer_batch_size: int = Field(default=500, ge=1, le=10_000)

    ready_max_lag_seconds: float = Field(default=30.0, gt=0)
    shutdown_grace_seconds: float = Field(default=30.0, gt=0)
    shutdown_drain_seconds: float = Field(default=5.0, ge=0)

    @field_validator("workers", mode="before")
    @classmethod
    def _empty_workers_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("cors_allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("chainhook_webhook_secret", "socket_auth_secret", mode="before")
    @classmethod
    def _empty_secret_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("socket_auth_secret")
    @classmethod
    def _strong_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # RFC 7518 §3.2: an HS256 key needs at least 256 bits.
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("SOCKET_AUTH_SECRET must be at least 32 bytes")
        return value


def environment_variables(model: type[BaseSettings]) -> list[str]:
    """The environment variables a settings class reads, by name."""
    prefix = model.model_config.get("env_prefix", "")
    return sorted((prefix + name).upper() for name in model.model_fields)


def describe_settings_error(error: ValidationError) -> list[str]:
    """One line per bad setting, by variable name, naming its environment variable and never its
    value (a secret's value must not reach a terminal or a log)."""
    lines = []
    for problem in error.errors(include_input=False, include_url=False):
        variable = str(problem["loc"][0]).upper() if problem["loc"] else "configuration"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(message if message.startswith(variable) else f"{variable}: {message}")
    return sorted(lines)
