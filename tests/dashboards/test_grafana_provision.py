"""`lifeline grafana provision` against a local server that answers like Grafana's HTTP API
(no Grafana can be installed here): each request is checked against the documented
endpoint, method, authentication and body; a second run must change nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from schemas.registry import Registry
from services.dashboards.generate import dashboards
from services.dashboards.provision import ProvisionError, provision

TOKEN = "glsa_lifelineUnitTest0123456789AB_0a1b2c3d"  # the shape of a service-account token
INFLUX_TOKEN = "influx-grafana-read-0123456789abcdef"


class FakeGrafana:
    """Datasources, folders and dashboards as documented at grafana.com/docs/grafana/latest/
    developers/http_api/ (data_source, folder, dashboard)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.datasources: dict[str, dict[str, Any]] = {}
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []

    def handle(self, method: str, path: str, auth: str | None,
               body: Any) -> tuple[int, dict[str, Any]]:
        self.requests.append((method, path))
        if auth != f"Bearer {TOKEN}":
            return 401, {"message": "Unauthorized"}
        if method == "GET" and path.startswith("/api/datasources/name/"):
            ds = self.datasources.get(path.rsplit("/", 1)[1].replace("%20", " "))
            return (200, ds) if ds else (404, {"message": "Data source not found"})
        if method == "POST" and path == "/api/datasources":
            missing = {"name", "type", "access", "url"} - set(body)
            if missing:
                self.errors.append(f"datasource without {missing}")
                return 400, {"message": f"missing {missing}"}
            stored = {**body, "id": len(self.datasources) + 1}
            stored.pop("secureJsonData", None)  # never returned by Grafana
            self.datasources[body["name"]] = stored
            return 200, {"datasource": stored, "id": stored["id"], "message": "Datasource added"}
        if method == "PUT" and path.startswith("/api/datasources/"):
            ds_id = int(path.rsplit("/", 1)[1])
            name = next(n for n, d in self.datasources.items() if d["id"] == ds_id)
            stored = {**body, "id": ds_id}
            stored.pop("secureJsonData", None)
            self.datasources[name] = stored
            return 200, {"message": "Datasource updated", "id": ds_id}
        if method == "GET" and path.startswith("/api/folders/"):
            f = self.folders.get(path.rsplit("/", 1)[1])
            return (200, f) if f else (404, {"message": "folder not found"})
        if method == "POST" and path == "/api/folders":
            if "title" not in body:
                self.errors.append("folder without title")
                return 400, {"message": "title missing"}
            f = {"uid": body.get("uid"), "title": body["title"], "id": len(self.folders) + 1}
            self.folders[f["uid"]] = f
            return 200, f
        if method == "GET" and path.startswith("/api/dashboards/uid/"):
            d = self.dashboards.get(path.rsplit("/", 1)[1])
            return (200, {"dashboard": d, "meta": {}}) if d else (
                404, {"message": "Dashboard not found"})
        if method == "POST" and path == "/api/dashboards/db":
            d = body.get("dashboard") or {}
            if "title" not in d or body.get("folderUid") not in self.folders:
                self.errors.append(f"bad dashboard request {sorted(body)}")
                return 400, {"message": "bad request"}
            old = self.dashboards.get(d["uid"])
            if old is not None and not body.get("overwrite"):
                return 412, {"message": "version-mismatch"}
            version = (old["version"] + 1) if old else 1
            self.dashboards[d["uid"]] = {**d, "id": 1, "version": version}
            return 200, {"id": 1, "uid": d["uid"], "status": "success", "version": version,
                         "url": f"/d/{d['uid']}"}
        self.errors.append(f"undocumented request {method} {path}")
        return 404, {"message": "Not found"}


@pytest.fixture
def grafana() -> Iterator[tuple[str, FakeGrafana]]:
    fake = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            code, payload = fake.handle(self.command, self.path,
                                        self.headers.get("Authorization"), body)
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", fake
    server.shutdown()


def test_provision_creates_then_changes_nothing(grafana: tuple[str, FakeGrafana],
                                                registry: Registry) -> None:
    url, fake = grafana
    first = provision(url, TOKEN, registry, influx_url="http://influxdb:8086",
                      influx_token=INFLUX_TOKEN)
    assert fake.errors == []
    assert sorted(first.created) == sorted(
        ["datasource Lifeline InfluxDB", "folder lifeline"]
        + [f"dashboard {d['uid']}" for d in dashboards(registry).values()])
    assert fake.datasources["Lifeline InfluxDB"]["uid"] == "lifeline-influx"
    writes_before = [r for r in fake.requests if r[0] != "GET"]
    second = provision(url, TOKEN, registry, influx_url="http://influxdb:8086",
                       influx_token=INFLUX_TOKEN)
    assert second.created == [] and second.updated == []
    assert [r for r in fake.requests if r[0] != "GET"] == writes_before  # no change at all
    changed = provision(url, TOKEN, registry, influx_url="http://influx2:8086",
                        influx_token=INFLUX_TOKEN)
    assert changed.updated == ["datasource Lifeline InfluxDB"]
    assert fake.datasources["Lifeline InfluxDB"]["url"] == "http://influx2:8086"


def test_provision_reports_a_refused_token(grafana: tuple[str, FakeGrafana],
                                           registry: Registry) -> None:
    url, _ = grafana
    with pytest.raises(ProvisionError, match="refused the token"):
        provision(url, "glsa_notTheServersToken0123456789_ffffffff", registry,
                  influx_url="http://x:8086", influx_token=INFLUX_TOKEN)


def test_provision_refuses_placeholder_tokens_before_sending_anything(
        grafana: tuple[str, FakeGrafana], registry: Registry) -> None:
    url, fake = grafana
    for token, influx_token, name in (("CHANGE-ME-grafana-service-token", INFLUX_TOKEN,
                                       "LIFELINE_GRAFANA_TOKEN"),
                                      (TOKEN, "CHANGE-ME-long-random-token",
                                       "LIFELINE_INFLUX_TOKEN")):
        with pytest.raises(ProvisionError, match=f"^{name} is refused") as info:
            provision(url, token, registry, influx_url="http://x:8086",
                      influx_token=influx_token)
        assert "CHANGE-ME" not in str(info.value)
    assert fake.requests == []


def test_grafana_behind_a_path_prefix() -> None:
    from services.dashboards.provision import _client

    assert _client("https://ops.example.net/grafana/", TOKEN).client.url == \
        "https://ops.example.net/grafana/api"
    assert _client("http://grafana:3000", TOKEN).client.url == "http://grafana:3000/api"
