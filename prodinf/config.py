"""Settings, read once from ``PRODINF_*`` environment variables.

With nothing set, every part runs on embedded defaults under ``PRODINF_HOME``:
a SQLite job store, kombu's filesystem transport as the broker, and Celery
results in the store. Two URLs switch to real servers::

    PRODINF_BROKER_URL=amqp://guest:guest@127.0.0.1:5672//
    PRODINF_DATABASE_URL=postgresql+psycopg://prodinf@127.0.0.1/prodinf

This class is the only place a setting's name and default are written; the
configuration reference in ``docs/configuration.rst`` is checked against it.
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from prodinf.addresses import validate_sender
from prodinf.exceptions import ValidationError
from prodinf.redact import redact_text

__all__ = [
    "HOME_FOLDER",
    "Settings",
    "default_home",
    "get_settings",
    "parse_networks",
    "with_driver",
]

#: The name of the folder that holds a prodinf's embedded state.
HOME_FOLDER = ".prodinf"
#: Link-local (cloud metadata), 0.0.0.0 and ::, AWS's and Alibaba's metadata addresses;
#: not loopback or private ranges, which one machine's prodinf fetches from (security.rst).
DEFAULT_DENIED_NETWORKS = (
    "169.254.0.0/16,fe80::/10,0.0.0.0/8,::/128,fd00:ec2::254/128,100.100.100.200/32"
)


def default_home(start: Path | None = None) -> Path:
    """Where prodinf keeps its embedded state when ``PRODINF_HOME`` is unset: the closest
    ``.prodinf`` folder in ``start`` (the working directory) or one of its parents, else
    ``~/.prodinf``. So every process of a user finds the same store, from any folder,
    and a project keeps its own by holding a ``.prodinf`` folder."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / HOME_FOLDER
        if candidate.is_dir():
            return candidate
    return (Path.home() / HOME_FOLDER).resolve()


def parse_networks(text: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """The networks of a comma-separated list (a bare address is its /32 or /128).

    :raises ValueError: an entry that is not a network, naming it."""
    return tuple(ip_network(e.strip(), strict=False) for e in text.split(",") if e.strip())


class Settings(BaseSettings):
    """Typed settings; every field can be set as ``PRODINF_<NAME>`` or by keyword."""

    model_config = SettingsConfigDict(env_prefix="PRODINF_", extra="ignore", frozen=True)

    home: Path = Field(
        default_factory=lambda: default_home(),
        description="Folder for embedded state: SQLite store, filesystem broker, outbox. "
        "Unset: the closest .prodinf folder in the working directory or a parent, else "
        "~/.prodinf; always made absolute.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the job store; unset means SQLite under home.",
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker URL; unset means kombu's filesystem transport under home.",
    )
    result_backend: str | None = Field(
        default=None,
        description="Celery result backend; unset means the job store's database.",
    )
    queue_handover: str = Field(default="handover", description="Queue of handover work.")
    queue_event: str = Field(default="event", description="Queue of event processing.")
    queue_email: str = Field(default="email", description="Queue of email and notifications.")
    queue_jobs: str = Field(default="jobs", description="Queue of general jobs and the reconciler.")
    plugins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated modules that register kinds when imported.",
    )
    reconcile_interval: float = Field(
        default=2.0,
        gt=0,
        description="Seconds between reconciler passes (due waits, lost messages).",
    )
    scheduler_interval: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between the scheduler's (beat) reconciler passes over all queues; "
        "a safety net beside the workers' own.",
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a worker holds a step without a heartbeat before another may take it.",
    )
    redrive_after: float = Field(
        default=300.0,
        gt=0,
        description="Seconds a queued job may sit untouched before its message is published again.",
    )
    resend_after: float = Field(
        default=10.0,
        gt=0,
        description="Seconds after which a job whose message was not confirmed sent (a publish "
        "refused, a process killed between commit and publish) is sent again.",
    )
    reconcile_batch: int = Field(
        default=200,
        ge=1,
        description="Most jobs one reconciler pass sends; the rest wait for the next pass, so a "
        "broker or store coming back is not flooded.",
    )
    queue_type: Literal["classic", "quorum"] = Field(
        default="classic",
        description="RabbitMQ queue type of every queue prodinf declares: classic, or quorum "
        "(replicated, what a cluster runs).",
    )
    worker_reconcile: bool = Field(
        default=True,
        description="Each worker also re-drives due jobs of its own queues, so waits progress "
        "with no scheduler running.",
    )
    worker_concurrency: int = Field(
        default=2, ge=1, description="Worker processes per queue started by `prodinf up`."
    )
    worker_pool: Literal["prefork", "threads", "solo"] = Field(
        default="prefork", description="Celery pool of workers started by prodinf."
    )
    host: str = Field(default="127.0.0.1", description="Address the portal listens on.")
    port: int = Field(default=5000, ge=0, le=65535, description="Port the portal listens on.")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated host names the portal answers to besides the loopback "
        "names, the host of public_url and host itself (a name, .example.org for a domain and "
        "its subdomains, or * for any); a request naming another Host is refused (400).",
    )
    max_request_bytes: int = Field(
        default=1048576,
        ge=1024,
        description="Largest request body the portal reads, in bytes; a larger one is refused "
        "(413) before it is read.",
    )
    secret_key: SecretStr = Field(
        default=SecretStr("prodinf-dev-only"),
        description="Flask secret key for the web forms; set it in production.",
    )
    auth: Literal["users", "none"] = Field(
        default="none",
        description="users: the API takes tokens and the pages a login, each user's role "
        "deciding what they may do; none: anyone who reaches the portal may do anything "
        "(allowed only while it listens on loopback).",
    )
    insecure: bool = Field(
        default=False,
        description="Let the portal serve beyond loopback with auth none (as --insecure does "
        "for prodinf up and portal; under gunicorn, the only way), saying so in the log at "
        "every start.",
    )
    log_level: str = Field(default="INFO", description="Log level of workers and portal.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="How workers, the scheduler and the portal write their log lines: text, "
        "or json (one JSON object a line, with the job, kind, step, queue and attempt on "
        "every line a job's step logs).",
    )
    # -- metrics ------------------------------------------------------------------------
    metrics_auth: Literal["token", "open"] = Field(
        default="token",
        description="Who may read /metrics with PRODINF_AUTH=users: token (any user's), or open.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of a worker's own /metrics (its counts); unset means none.",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Address a worker's metrics_port listens on."
    )
    # -- mail and notifications ---------------------------------------------------------
    smtp_host: str | None = Field(
        default=None,
        description="SMTP server that sends mail; unset means mail is written to the outbox "
        "folder under home.",
    )
    smtp_port: int = Field(default=25, ge=1, le=65535, description="Port of the SMTP server.")
    smtp_tls: Literal["none", "starttls", "ssl"] = Field(
        default="none",
        description="TLS to the SMTP server: none, starttls (upgrade after connecting) or ssl "
        "(TLS from the first byte, usually port 465).",
    )
    smtp_user: str | None = Field(
        default=None, description="User to log in to the SMTP server as; unset means no login."
    )
    smtp_password: SecretStr | None = Field(default=None, description="Password of smtp_user.")
    smtp_timeout: float = Field(
        default=30.0, gt=0, description="Seconds each SMTP connect, read or write may take."
    )
    mail_from: str = Field(
        default="prodinf@localhost",
        description="Sender (From) of every mail: an address, optionally with a name "
        "(``prodinf <noreply@example.org>``).",
    )
    poll_interval: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between looks at a URL that a notification waits on.",
    )
    notify_deadline: float = Field(
        default=604800.0,
        gt=0,
        description="Seconds a notification waits for its URL to finish before it reports "
        "that it did not (7 days).",
    )
    webhook_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds a webhook receiver may take to connect and to answer.",
    )
    public_url: str | None = Field(
        default=None,
        description="The portal's address as users reach it (https://prodinf.example.org), "
        "for links to jobs in notifications; unset, they carry no link (prodinf up sets "
        "its own address).",
    )
    webhook_secret: SecretStr = Field(
        default=SecretStr(""),
        description="Key of the HMAC-SHA256 signature sent with each webhook; empty means "
        "webhooks are not signed.",
    )
    denied_networks: str = Field(
        default=DEFAULT_DENIED_NETWORKS,
        description="Comma-separated networks (CIDR) that requests for jobs and users (URLs, "
        "webhooks, services) never reach, whatever the name or spelling; empty means none.",
    )
    allowed_networks: str | None = Field(
        default=None, description="Comma-separated networks exempted from denied_networks."
    )
    # -- database job services (healthcheck, register_metadata) ----------------------------
    sqlite_roots: Annotated[list[str], NoDecode] | None = Field(
        default=None,
        description="Comma-separated folders under which the SQLite files jobs open (copy, "
        "healthcheck, register_metadata, handover) must lie; a relative folder is under home. "
        "Unset: home/data and home/staging, and the folder `prodinf up` (for its workers) or "
        "a command in a shell was started in. "
        "prodinf's own files (the job store, home's broker, outbox and logs) never are.",
    )
    database_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts (or host:port) whose databases jobs may open, each "
        "a name, an address or a glob (*.db.example.org); empty means any host.",
    )
    naming_rules: Path | None = Field(
        default=None,
        description="YAML file of the naming rules that read a database name as dataset, type, "
        "release and assembly; unset means the shipped Ensembl-style rules (config/naming.yaml).",
    )
    healthchecks: Path | None = Field(
        default=None,
        description="YAML healthcheck catalogue; unset means the shipped one "
        "(config/healthchecks.yaml).",
    )
    event_rules: Path | None = Field(
        default=None,
        description="YAML rules mapping changed meta keys to dataset events; unset means the "
        "shipped ones (config/events.yaml).",
    )
    subscriptions: Path | None = Field(
        default=None,
        description="YAML file of the subscriptions: which processes an event starts; unset "
        "means the shipped example (config/subscriptions.yaml).",
    )
    services: Path | None = Field(
        default=None,
        description="YAML file of the remote services: other prodinfs and HTTP job services "
        "that subscriptions can run jobs on; unset means the shipped example "
        "(config/services.yaml).",
    )
    # -- handover ---------------------------------------------------------------------
    handover_config: Path | None = Field(
        default=None,
        description="YAML file of the handover settings: the window of each database type, "
        "its stages and the staging rules; unset means the shipped example "
        "(config/handover.yaml).",
    )
    release: int | None = Field(
        default=None,
        ge=0,
        description="The current release: a handover is refused unless the database's name "
        "and its release meta key say this release; unset means any release.",
    )
    handover_max_copies: int = Field(
        default=2,
        ge=1,
        description="Most handover copies running at once to one staging server; the others "
        "wait, holding no worker, in submission order.",
    )
    metadata_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the database holding dataset registrations; unset means "
        "the job store's database.",
    )

    @field_validator(
        "smtp_host",
        "smtp_user",
        "smtp_password",
        "public_url",
        "naming_rules",
        "healthchecks",
        "event_rules",
        "subscriptions",
        "services",
        "handover_config",
        "release",
        "metadata_url",
        "metrics_port",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # PRODINF_SMTP_HOST= (set but empty, as env files and compose often leave it)
        # means "no server", not a host named "".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("mail_from")
    @classmethod
    def _check_mail_from(cls, value: str) -> str:
        try:
            return validate_sender(value)
        except ValidationError as exc:  # pydantic reports ValueError, naming the field
            raise ValueError(exc.message) from None

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://prodinf.example.org")
        return value

    @field_validator("denied_networks", "allowed_networks")
    @classmethod
    def _check_networks(cls, value: str | None) -> str | None:
        return None if value is None else ",".join(map(str, parse_networks(value)))

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        # One place whatever the working directory of the process that reads it: a
        # relative PRODINF_HOME is resolved once, here, and passed on absolute.
        return value.expanduser().resolve()

    @field_validator("plugins", "allowed_hosts", mode="before")
    @classmethod
    def _split_plugins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("sqlite_roots", "database_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            value = [str(part) for part in value]  # folders given as paths (tests, Python)
            if not value and info.field_name == "sqlite_roots":
                return None  # PRODINF_SQLITE_ROOTS= (set but empty): the default folders
        return value

    @field_validator("database_hosts")
    @classmethod
    def _check_database_hosts(cls, value: list[str]) -> list[str]:
        if any(" " in pattern or pattern.count("[") > 1 for pattern in value):
            raise ValueError("write each as host, host:port, [ipv6] or [ipv6]:port")
        return value

    # -- derived values: computed, never stored, so they cannot drift --------

    @property
    def store_url(self) -> str:
        """The job store's SQLAlchemy URL (SQLite under home when unset)."""
        if self.database_url:
            return with_driver(self.database_url)
        return f"sqlite:///{self.home / 'prodinf.sqlite'}"

    @property
    def sqlite_folders(self) -> list[Path]:
        """The folders under which the SQLite files jobs open must lie, resolved:
        ``sqlite_roots`` (a relative one under home), or home/data and home/staging."""
        roots = self.sqlite_roots if self.sqlite_roots is not None else ["data", "staging"]
        return [(self.home / Path(root).expanduser()).resolve() for root in roots]

    @property
    def broker(self) -> str:
        """The broker URL Celery connects to."""
        return self.broker_url or "filesystem://localhost//"

    @property
    def is_embedded_broker(self) -> bool:
        return self.broker_url is None

    @property
    def results_url(self) -> str:
        """Celery's result backend: the job store's database unless set."""
        if self.result_backend:
            return self.result_backend
        return "db+" + self.store_url

    @property
    def queues(self) -> dict[str, str]:
        """Logical queue name -> configured queue name."""
        return {
            "handover": self.queue_handover,
            "event": self.queue_event,
            "email": self.queue_email,
            "jobs": self.queue_jobs,
        }

    def queue_for(self, name: str) -> str:
        """The configured queue of a logical queue (``email`` -> ``PRODINF_QUEUE_EMAIL``);
        any other name is a queue of its own and comes back unchanged."""
        return self.queues.get(name, name)

    def masked(self) -> dict[str, Any]:
        """Every setting and derived URL, with secrets and URL passwords masked."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "**********" if value.get_secret_value() else ""
            elif isinstance(value, str) and name.endswith(("_url", "_backend")):
                value = redact_text(value)
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        out["store_url (effective)"] = redact_text(self.store_url)
        out["broker (effective)"] = redact_text(self.broker)
        return out


#: Drivers prodinf installs, used when a URL names only the database.
_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}


def with_driver(url: str) -> str:
    """Return ``url`` with the installed driver named (``postgresql://`` -> ``+psycopg``)."""
    scheme, sep, rest = url.partition("://")
    return f"{_DEFAULT_DRIVERS.get(scheme, scheme)}{sep}{rest}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
