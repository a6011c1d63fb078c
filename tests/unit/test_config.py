"""Settings: embedded defaults, PRODINF_* overrides, validation, and masking of secrets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import SecretStr
from pydantic import ValidationError as PydanticValidationError

from prodinf.config import Settings, get_settings, with_driver
from prodinf.redact import redact_text

SECRET = "hunter2"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PRODINF_* variable from the developer's shell; run in an empty folder."""
    for name in list(os.environ):
        if name.startswith("PRODINF_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # the per-user home, in tmp_path
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()


# -- defaults --------------------------------------------------------------------------------


def test_defaults_are_embedded_under_home(tmp_path: Path) -> None:
    """Given no PRODINF_* variable and no .prodinf folder up the tree, then the settings
    are embedded under the user's ~/.prodinf: a SQLite store, the filesystem broker, a
    queue per kind of work, a portal on loopback.
    """
    settings = Settings()

    user_home = (tmp_path / "user" / ".prodinf").resolve()
    assert settings.home == user_home
    assert settings.database_url is None
    assert settings.store_url == f"sqlite:///{user_home / 'prodinf.sqlite'}"
    assert settings.broker_url is None
    assert settings.broker.startswith("filesystem://")  # kombu's filesystem transport
    assert settings.is_embedded_broker
    assert settings.results_url == "db+" + settings.store_url
    assert settings.queues == {
        "handover": "handover",
        "event": "event",
        "email": "email",
        "jobs": "jobs",
    }
    assert settings.plugins == []
    assert (settings.host, settings.port) == ("127.0.0.1", 5000)


def test_the_closest_prodinf_folder_up_the_tree_is_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a project folder holding .prodinf, when a process starts in a folder below
    it, then its home is that .prodinf (not one of its own); and a relative
    PRODINF_HOME is made absolute, so children started elsewhere find the same one."""
    project = tmp_path / "project"
    (project / ".prodinf").mkdir(parents=True)
    deep = project / "analysis" / "2026"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)

    assert Settings().home == (project / ".prodinf").resolve()
    assert Settings().store_url == f"sqlite:///{(project / '.prodinf').resolve()}/prodinf.sqlite"

    monkeypatch.setenv("PRODINF_HOME", "state")
    assert Settings().home == (deep / "state").resolve()
    assert Settings().home.is_absolute()


def test_home_moves_the_embedded_store(tmp_path: Path) -> None:
    """Given another home, then the embedded store lives there."""
    settings = Settings(home=tmp_path / "elsewhere")

    assert settings.store_url == f"sqlite:///{tmp_path / 'elsewhere' / 'prodinf.sqlite'}"


def test_defaults_are_valid_settings() -> None:
    """Given the defaults, then every one passes its field's own validation."""
    # Every default passes the field's own validation.
    defaults = Settings()
    assert Settings.model_validate(defaults.model_dump()) == defaults


# -- environment -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "effective"),
    [
        ("postgresql://u:pw@db/prodinf", "postgresql+psycopg://u:pw@db/prodinf"),
        ("postgres://u:pw@db/prodinf", "postgresql+psycopg://u:pw@db/prodinf"),
        ("mysql://u:pw@db/prodinf", "mysql+pymysql://u:pw@db/prodinf"),
        ("mariadb://u:pw@db/prodinf", "mysql+pymysql://u:pw@db/prodinf"),
        ("postgresql+psycopg://u@db/prodinf", "postgresql+psycopg://u@db/prodinf"),
        ("sqlite:////var/lib/prodinf.sqlite", "sqlite:////var/lib/prodinf.sqlite"),
    ],
)
def test_database_url_from_the_environment_gets_the_installed_driver(
    monkeypatch: pytest.MonkeyPatch, given: str, effective: str
) -> None:
    """Given PRODINF_DATABASE_URL without a driver, then the store and the results use the
    installed one.
    """
    monkeypatch.setenv("PRODINF_DATABASE_URL", given)

    settings = Settings()

    assert settings.database_url == given
    assert settings.store_url == effective
    assert settings.results_url == "db+" + effective


def test_broker_url_from_the_environment_replaces_the_embedded_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given PRODINF_BROKER_URL, then it is the broker, and the embedded one is not used."""
    monkeypatch.setenv("PRODINF_BROKER_URL", "amqp://guest:guest@rabbit:5672//")

    settings = Settings()

    assert settings.broker == "amqp://guest:guest@rabbit:5672//"
    assert not settings.is_embedded_broker


def test_scalar_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given PRODINF_* variables for numbers, booleans, names and a secret, then each is
    read as its type.
    """
    for name, value in {
        "PRODINF_HOME": "/srv/prodinf",
        "PRODINF_PORT": "8080",
        "PRODINF_LEASE_SECONDS": "12.5",
        "PRODINF_WORKER_RECONCILE": "false",
        "PRODINF_WORKER_POOL": "threads",
        "PRODINF_QUEUE_EMAIL": "mail",
        "PRODINF_SECRET_KEY": SECRET,
    }.items():
        monkeypatch.setenv(name, value)

    settings = Settings()

    assert settings.home == Path("/srv/prodinf")
    assert settings.port == 8080
    assert settings.lease_seconds == 12.5
    assert settings.worker_reconcile is False
    assert settings.worker_pool == "threads"
    assert settings.queues["email"] == "mail"
    assert settings.secret_key.get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("raw", "plugins"),
    [
        ("acme.kinds", ["acme.kinds"]),
        ("acme.kinds, other.kinds ,,third", ["acme.kinds", "other.kinds", "third"]),
        ("", []),
        (" , ", []),
    ],
)
def test_plugins_are_a_comma_separated_list(
    monkeypatch: pytest.MonkeyPatch, raw: str, plugins: list[str]
) -> None:
    """Given PRODINF_PLUGINS, then it is read as a comma-separated list."""
    monkeypatch.setenv("PRODINF_PLUGINS", raw)

    assert Settings().plugins == plugins


def test_plugins_by_keyword_take_a_list() -> None:
    """Given plugins as a keyword, then they are taken as the list given."""
    assert Settings(plugins=["a", "b"]).plugins == ["a", "b"]


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("PRODINF_PORT", "abc", "port"),
        ("PRODINF_PORT", "70000", "port"),
        ("PRODINF_LEASE_SECONDS", "0", "lease_seconds"),
        ("PRODINF_REDRIVE_AFTER", "-1", "redrive_after"),
        ("PRODINF_WORKER_POOL", "gevent", "worker_pool"),
        ("PRODINF_WORKER_CONCURRENCY", "0", "worker_concurrency"),
        ("PRODINF_WORKER_RECONCILE", "maybe", "worker_reconcile"),
        ("PRODINF_SMTP_TLS", "yes", "smtp_tls"),
        ("PRODINF_SMTP_PORT", "0", "smtp_port"),
        ("PRODINF_SMTP_TIMEOUT", "0", "smtp_timeout"),
        ("PRODINF_POLL_INTERVAL", "0", "poll_interval"),
        ("PRODINF_NOTIFY_DEADLINE", "-5", "notify_deadline"),
        ("PRODINF_MAIL_FROM", "not an address", "mail_from"),
        ("PRODINF_MAIL_FROM", "a@b.org\r\nBcc: x@y.org", "mail_from"),
        ("PRODINF_WEBHOOK_TIMEOUT", "0", "webhook_timeout"),
        ("PRODINF_PUBLIC_URL", "prodinf.example.org", "public_url"),
        ("PRODINF_PUBLIC_URL", "https://", "public_url"),
    ],
)
def test_bad_values_raise_an_error_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    """Given a bad value in a PRODINF_* variable, when the settings are read, then the
    error names that field and that field only.
    """
    monkeypatch.setenv(variable, value)

    with pytest.raises(PydanticValidationError) as caught:
        Settings()

    assert [error["loc"] for error in caught.value.errors()] == [(field,)]
    assert field in str(caught.value)


def test_public_url_loses_its_trailing_slash_and_blank_means_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given PRODINF_PUBLIC_URL with a trailing slash, then it loses it; given it blank,
    then it is unset.
    """
    monkeypatch.setenv("PRODINF_PUBLIC_URL", "https://prodinf.example.org/ ")
    assert Settings().public_url == "https://prodinf.example.org"
    monkeypatch.setenv("PRODINF_PUBLIC_URL", "")
    assert Settings().public_url is None


def test_keywords_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given a setting both in the environment and as a keyword, then the keyword wins."""
    monkeypatch.setenv("PRODINF_PORT", "6000")

    assert Settings(port=7000).port == 7000


def test_settings_are_frozen() -> None:
    """Given settings, when a field is assigned, then it is refused."""
    settings = Settings()

    with pytest.raises(PydanticValidationError):
        settings.port = 1  # type: ignore[misc]


def test_get_settings_reads_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given get_settings() called once, when the environment changes, then it still
    answers the settings it read first.
    """
    monkeypatch.setenv("PRODINF_PORT", "6001")
    first = get_settings()
    monkeypatch.setenv("PRODINF_PORT", "6002")

    assert get_settings() is first
    assert first.port == 6001


# -- secrets ---------------------------------------------------------------------------------


def test_masked_hides_url_passwords_and_secret_values() -> None:
    """Given URLs with passwords and a secret key, when the settings are masked, then no
    secret shows, and the URLs show with *** for the password.
    """
    settings = Settings(
        database_url=f"postgresql://prodinf:{SECRET}@db:5432/prodinf",
        broker_url=f"amqp://prodinf:{SECRET}@rabbit:5672/prodinf",
        result_backend=f"redis://:{SECRET}@cache:6379/0",
        secret_key=SecretStr(SECRET),
    )

    masked = settings.masked()

    assert SECRET not in json.dumps(masked)
    assert masked["database_url"] == "postgresql://prodinf:***@db:5432/prodinf"
    assert masked["broker_url"] == "amqp://prodinf:***@rabbit:5672/prodinf"
    assert masked["result_backend"] == "redis://:***@cache:6379/0"
    assert masked["secret_key"] == "**********"
    assert masked["store_url (effective)"] == "postgresql+psycopg://prodinf:***@db:5432/prodinf"
    assert masked["broker (effective)"] == "amqp://prodinf:***@rabbit:5672/prodinf"
    # and the secret key never shows in the settings' repr either
    assert SECRET not in repr(settings.secret_key)


def test_masked_hides_the_smtp_password_and_the_webhook_secret() -> None:
    """Given an SMTP password and a webhook secret, when masked, then neither shows, and
    unset ones stay unset.
    """
    settings = Settings(
        smtp_host="smtp.example.org",
        smtp_user="prodinf",
        smtp_password=SecretStr(SECRET),
        webhook_secret=SecretStr(SECRET),
    )

    masked = settings.masked()

    assert SECRET not in json.dumps(masked)
    assert masked["smtp_password"] == "**********"
    assert masked["webhook_secret"] == "**********"
    assert masked["smtp_user"] == "prodinf"
    # unset, they stay unset rather than look set
    assert Settings().masked()["smtp_password"] is None
    assert Settings().masked()["webhook_secret"] == ""


def test_mail_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given the mail settings in PRODINF_* variables, then each is read as its type."""
    for name, value in {
        "PRODINF_SMTP_HOST": "smtp.example.org",
        "PRODINF_SMTP_PORT": "587",
        "PRODINF_SMTP_TLS": "starttls",
        "PRODINF_SMTP_PASSWORD": SECRET,
        "PRODINF_MAIL_FROM": "prodinf <noreply@example.org>",
        "PRODINF_NOTIFY_DEADLINE": "3600",
    }.items():
        monkeypatch.setenv(name, value)

    settings = Settings()

    assert (settings.smtp_host, settings.smtp_port, settings.smtp_tls) == (
        "smtp.example.org",
        587,
        "starttls",
    )
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == SECRET
    assert settings.mail_from == "prodinf <noreply@example.org>"
    assert settings.notify_deadline == 3600


def test_an_empty_smtp_host_means_the_outbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given PRODINF_SMTP_HOST and _USER set but blank (as env files often leave them),
    then they are unset: mail goes to the outbox.
    """
    # env files and compose files often leave a variable set but empty
    monkeypatch.setenv("PRODINF_SMTP_HOST", "")
    monkeypatch.setenv("PRODINF_SMTP_USER", " ")

    settings = Settings()

    assert settings.smtp_host is None
    assert settings.smtp_user is None


def test_masked_lists_every_setting_as_json() -> None:
    """When the settings are masked, then every setting is there, and it is JSON."""
    masked = Settings(plugins=["acme.kinds"]).masked()

    assert set(Settings.model_fields) <= set(masked)
    assert masked["home"] == str(Settings().home)
    assert masked["plugins"] == ["acme.kinds"]
    assert masked["database_url"] is None
    assert masked["broker (effective)"] == Settings().broker
    json.dumps(masked)


def test_masked_hides_every_password_of_a_failover_broker_url() -> None:
    """Given a failover broker URL (several, separated by ;), when masked, then no password
    shows and every host does.
    """
    # Celery accepts several broker URLs separated by ';' (failover).
    settings = Settings(broker_url=f"amqp://u:{SECRET}@rabbit-1//;amqp://u:{SECRET}@rabbit-2//")

    masked = settings.masked()

    assert SECRET not in json.dumps(masked)
    assert "rabbit-1" in masked["broker_url"] and "rabbit-2" in masked["broker_url"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u:pw@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        ("amqp://guest:pa%40ss@h:5672//", "amqp://guest:***@h:5672//"),
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("amqp://u:pw@h:notaport//", "amqp://u:***@h:notaport//"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("filesystem://", "filesystem://"),
        ("sqlite:////srv/prodinf.sqlite", "sqlite:////srv/prodinf.sqlite"),
        ("not a url", "not a url"),
    ],
)
def test_urls_are_masked(url: str, shown: str) -> None:
    """Given a URL, when masked, then its password is *** and the rest stays."""
    assert redact_text(url) == shown


@pytest.mark.parametrize(
    ("url", "effective"),
    [
        ("postgresql://h/db", "postgresql+psycopg://h/db"),
        ("postgres://h/db", "postgresql+psycopg://h/db"),
        ("mysql://h/db", "mysql+pymysql://h/db"),
        ("mariadb://h/db", "mysql+pymysql://h/db"),
        ("postgresql+asyncpg://h/db", "postgresql+asyncpg://h/db"),
        ("sqlite:///x.sqlite", "sqlite:///x.sqlite"),
    ],
)
def test_with_driver(url: str, effective: str) -> None:
    """Given a database URL, then with_driver names the driver prodinf installs for it."""
    assert with_driver(url) == effective
