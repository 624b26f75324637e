"""Provision an existing Grafana over its HTTP API with ``grafana-client`` (the maintained
successor of the unmaintained ``grafana-api``): the InfluxDB datasource, optionally the
work orders' PostgreSQL datasource, a folder and every generated dashboard. Idempotent:
what is already as generated is left alone, so a second run makes no change. The Grafana
token, the InfluxDB token and the PostgreSQL password are checked like every other secret
(``services.core.settings.check_secret``) before anything is sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

from schemas.registry import Registry
from services.core.errors import LifelineError
from services.core.settings import check_secret
from services.dashboards.generate import DATASOURCE, PG_DATASOURCE, dashboards

DATASOURCE_NAME = "Lifeline InfluxDB"
PG_DATASOURCE_NAME = "Lifeline work orders"
# As grafana/provisioning/datasources/lifeline.yaml (a test keeps the two the same).
PG_JSON_DATA = {"postgresVersion": 1500, "timescaledb": False, "maxOpenConns": 5,
                "maxIdleConns": 2, "connMaxLifetime": 14400}
FOLDER_UID = "lifeline"
FOLDER_TITLE = "城市生命线 Lifeline"


class ProvisionError(LifelineError, RuntimeError):
    pass


@dataclass
class Report:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def _client(url: str, token: str) -> Any:
    u = urlparse(url)
    prefix = u.path.strip("/")
    # grafana-client joins "{prefix}api" itself: a prefix needs its trailing slash.
    return GrafanaApi(auth=token, host=u.hostname or "localhost", port=u.port,
                      protocol=u.scheme or "http", url_path_prefix=f"{prefix}/" if prefix else "")


def datasource_model(influx_url: str, influx_token: str, database: str) -> dict[str, Any]:
    return {"name": DATASOURCE_NAME, "uid": DATASOURCE["uid"], "type": "influxdb",
            "access": "proxy", "url": influx_url, "isDefault": True,
            "jsonData": {"dbName": database, "httpMode": "POST",
                         "httpHeaderName1": "Authorization"},
            "secureJsonData": {"httpHeaderValue1": f"Token {influx_token}"}}


@dataclass(frozen=True)
class PostgresSource:
    """The work orders' PostgreSQL as Grafana reaches it (``url``: host:port), and the role
    it reads as: give it SELECT only on the orders tables (Grafana runs panel SQL as
    written)."""

    url: str
    user: str
    password: str = field(repr=False)
    database: str = "lifeline"
    sslmode: str = "disable"


def postgres_datasource_model(pg: PostgresSource) -> dict[str, Any]:
    return {"name": PG_DATASOURCE_NAME, "uid": PG_DATASOURCE["uid"],
            "type": PG_DATASOURCE["type"], "access": "proxy", "url": pg.url, "user": pg.user,
            "isDefault": False,
            "jsonData": {"database": pg.database, "sslmode": pg.sslmode, **PG_JSON_DATA},
            "secureJsonData": {"password": pg.password}}


def _ensure_datasource(api: Any, ds: dict[str, Any], report: Report) -> None:
    """Create ``ds``, or update it when anything but its secrets differs (Grafana never
    returns those)."""
    name = ds["name"]
    try:
        current = api.datasource.get_datasource_by_name(name)
    except GrafanaUnauthorizedError:
        raise
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.datasource.create_datasource(ds)
        report.created.append(f"datasource {name}")
        return
    if any(current.get(k) != v for k, v in ds.items() if k != "secureJsonData"):
        api.datasource.update_datasource(current["id"], ds)
        report.updated.append(f"datasource {name}")
    else:
        report.unchanged.append(f"datasource {name}")


def _content(board: dict[str, Any]) -> dict[str, Any]:
    """A dashboard without what Grafana assigns itself (id, version)."""
    return {k: v for k, v in board.items() if k not in ("id", "version")}


def _missing(exc: GrafanaClientError) -> bool:
    return getattr(exc, "status_code", None) == 404


def provision(url: str, token: str, registry: Registry, *, influx_url: str, influx_token: str,
              database: str = "lifeline", postgres: PostgresSource | None = None) -> Report:
    """``postgres``: also the work orders' PostgreSQL datasource (the orders dashboard reads
    it); without it, that dashboard is provisioned but shows errors until one exists."""
    try:
        check_secret("LIFELINE_GRAFANA_TOKEN", token)
        check_secret("LIFELINE_INFLUX_TOKEN", influx_token)
        if postgres is not None:
            check_secret("LIFELINE_GRAFANA_POSTGRES_PASSWORD", postgres.password)
    except ValueError as exc:
        raise ProvisionError(str(exc)) from None
    api = _client(url, token)
    report = Report()
    sources = [datasource_model(influx_url, influx_token, database)]
    if postgres is not None:
        sources.append(postgres_datasource_model(postgres))
    try:
        for ds in sources:
            _ensure_datasource(api, ds, report)
        try:
            api.folder.get_folder(FOLDER_UID)
            report.unchanged.append(f"folder {FOLDER_UID}")
        except GrafanaUnauthorizedError:
            raise
        except GrafanaClientError as exc:
            if not _missing(exc):
                raise
            api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
            report.created.append(f"folder {FOLDER_UID}")
        for board in dashboards(registry).values():
            uid = board["uid"]
            try:
                existing = api.dashboard.get_dashboard(uid)["dashboard"]
            except GrafanaUnauthorizedError:
                raise
            except GrafanaClientError as exc:
                if not _missing(exc):
                    raise
                existing = None
            same = existing is not None and _content(existing) == _content(board)
            if same:
                report.unchanged.append(f"dashboard {uid}")
                continue
            api.dashboard.update_dashboard({"dashboard": {**board, "id": None},
                                            "folderUid": FOLDER_UID, "overwrite": True,
                                            "message": "lifeline grafana provision"})
            (report.created if existing is None else report.updated).append(f"dashboard {uid}")
    except GrafanaUnauthorizedError as exc:
        raise ProvisionError(f"Grafana at {url} refused the token (401)") from exc
    except GrafanaClientError as exc:
        raise ProvisionError(f"Grafana at {url} refused a request: {exc}") from exc
    except GrafanaException as exc:  # 5xx, timeouts
        raise ProvisionError(f"Grafana at {url} failed: {exc}") from exc
    return report
