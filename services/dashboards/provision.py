"""Provision an existing Grafana over its HTTP API with ``grafana-client`` (the maintained
successor of the unmaintained ``grafana-api``): the InfluxDB datasource, a folder and every
generated dashboard. Idempotent: what is already as generated is left alone, so a second
run makes no change. The Grafana token and the InfluxDB token are checked like every other
secret (``services.core.settings.check_secret``) before anything is sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

from schemas.registry import Registry
from services.core.errors import LifelineError
from services.core.settings import check_secret
from services.dashboards.generate import DATASOURCE, dashboards

DATASOURCE_NAME = "Lifeline InfluxDB"
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


def _content(board: dict[str, Any]) -> dict[str, Any]:
    """A dashboard without what Grafana assigns itself (id, version)."""
    return {k: v for k, v in board.items() if k not in ("id", "version")}


def _missing(exc: GrafanaClientError) -> bool:
    return getattr(exc, "status_code", None) == 404


def provision(url: str, token: str, registry: Registry, *, influx_url: str, influx_token: str,
              database: str = "lifeline") -> Report:
    try:
        check_secret("LIFELINE_GRAFANA_TOKEN", token)
        check_secret("LIFELINE_INFLUX_TOKEN", influx_token)
    except ValueError as exc:
        raise ProvisionError(str(exc)) from None
    api = _client(url, token)
    report = Report()
    ds = datasource_model(influx_url, influx_token, database)
    try:
        try:
            current = api.datasource.get_datasource_by_name(DATASOURCE_NAME)
        except GrafanaUnauthorizedError:
            raise
        except GrafanaClientError as exc:
            if not _missing(exc):
                raise
            api.datasource.create_datasource(ds)
            report.created.append(f"datasource {DATASOURCE_NAME}")
        else:
            keys = ("uid", "type", "access", "url", "jsonData", "isDefault")
            if any(current.get(k) != ds[k] for k in keys):
                api.datasource.update_datasource(current["id"], ds)
                report.updated.append(f"datasource {DATASOURCE_NAME}")
            else:
                report.unchanged.append(f"datasource {DATASOURCE_NAME}")
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
