"""``lifeline backup``: back up and restore every store (docs/operations.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

# The defaults of the whole CLI (services/cli.py), without importing the notifier here.
DEFAULT_REGISTRY = "deploy/registry/wenzhou-bay.yaml"
DEFAULT_ONCALL = "deploy/oncall/wenzhou-bay.yaml"

if TYPE_CHECKING:
    from services.ops.backup import Stores

# The style of services/cli.py (not imported from there: it imports this module).
CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "show_default": True,
                           "max_content_width": 110}


def example(*lines: str) -> str:
    return "Example:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


backup_app = typer.Typer(help="Back up and restore Kafka topics (changelogs included), "
                              "InfluxDB, the registry and the on-call file "
                              "(docs/operations.md).",
                         epilog=example("lifeline backup create /srv/backups/$(date +%F)"),
                         no_args_is_help=True, rich_markup_mode=None, context_settings=CONTEXT)

RPC_HELP = "InfluxDB 1.x backup address (its bind-address, host:port)."
RPC_DEFAULT = "the local stack's, else 127.0.0.1:8088"


def _fail(text: str) -> typer.Exit:
    typer.secho(text, fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def _stores(influx_rpc: str | None) -> Stores:
    import logging

    from services.core.logging import configure

    configure("WARNING")
    # aiokafka logs each failed connection itself; the command says it once, in one line.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    from services.core.settings import InfluxSettings, KafkaSettings, load, state_dir
    from services.ops.backup import Stores
    from services.stack.manager import load_info

    if influx_rpc is None:
        info = load_info(state_dir())
        influx_rpc = f"127.0.0.1:{info.ports.influx_rpc}" if info else "127.0.0.1:8088"
    import os

    # The work orders' PostgreSQL when this machine's settings name it (the local stack's
    # stack.env and compose do); without it the backup holds Kafka, InfluxDB and files.
    postgres = os.environ.get("LIFELINE_POSTGRES_URL") or None
    return Stores(load(KafkaSettings), load(InfluxSettings), influx_rpc, postgres)


@backup_app.command("create", epilog=example(
    "lifeline backup create /srv/backups/lifeline-$(date +%F)",
    "lifeline backup create --no-influx /backups/kafka-only"))
def backup_create(
    folder: Annotated[Path, typer.Argument(help="A new (or empty) folder for the backup.")],
    registry: Annotated[Path, typer.Option(
        "--registry", envvar="LIFELINE_REGISTRY", show_envvar=True,
        help="The facility registry (YAML or JSON).")] = Path(DEFAULT_REGISTRY),
    oncall: Annotated[Path, typer.Option(
        "--oncall", envvar="LIFELINE_NOTIFIER_ONCALL", show_envvar=True,
        help="The on-call file (YAML): people, channels, teams, routes.")] = Path(DEFAULT_ONCALL),
    influx_rpc: Annotated[str | None, typer.Option(envvar="LIFELINE_INFLUX_RPC", help=RPC_HELP,
                                                   show_default=RPC_DEFAULT)] = None,
    no_influx: Annotated[bool, typer.Option("--no-influx", help="Kafka and files only (back "
                                            "InfluxDB up with its own tools).")] = False,
) -> None:
    """Back up every Kafka topic that holds state (with Faust's changelogs and the consumer
    groups' offsets), the InfluxDB database, the registry and the on-call file. Prints a
    one-line JSON summary. Safe while the services run."""
    from services.ops.backup import BackupError, create, summary_records

    stores = _stores(influx_rpc)
    files = {"registry": registry, "oncall": oncall}
    try:
        manifest = create(stores, folder, files, influx=not no_influx)
    except BackupError as exc:
        raise _fail(f"backup failed: {exc}") from None
    typer.echo(json.dumps({"folder": str(folder), "topics": len(manifest["kafka"]["topics"]),
                           "records": summary_records(manifest),
                           "groups": sorted(manifest["kafka"]["groups"]),
                           "influxdb": manifest["influxdb"] is not None,
                           "postgres": manifest.get("postgres") is not None,
                           "files": sorted(manifest["files"])}))


@backup_app.command("restore", epilog=example(
    "lifeline backup restore /srv/backups/lifeline-2026-12-01 "
    "--write-oncall deploy/oncall/wenzhou-bay.yaml",
    "lifeline backup restore --no-influx /backups/kafka-only"))
def backup_restore(
    folder: Annotated[Path, typer.Argument(help="A folder made by `lifeline backup create`.")],
    write_registry: Annotated[Path | None, typer.Option(
        "--write-registry", help="Write the backed-up registry to this file.",
        show_default="not written")] = None,
    write_oncall: Annotated[Path | None, typer.Option(
        "--write-oncall", help="Write the backed-up on-call file to this file.",
        show_default="not written")] = None,
    influx_rpc: Annotated[str | None, typer.Option(envvar="LIFELINE_INFLUX_RPC", help=RPC_HELP,
                                                   show_default=RPC_DEFAULT)] = None,
    no_influx: Annotated[bool, typer.Option("--no-influx", help="Kafka and files only.")] = False,
) -> None:
    """Restore a backup into EMPTY stores (a fresh stack, new volumes) with the services
    stopped: the same topics, partitions, keys and offsets, the groups' positions, the
    InfluxDB database. Refuses topics that hold records and a database that holds data."""
    from services.ops.backup import BackupError, restore

    stores = _stores(influx_rpc)
    files = {k: v for k, v in (("registry", write_registry), ("oncall", write_oncall))
             if v is not None}
    try:
        summary = restore(stores, folder, files, influx=not no_influx)
    except BackupError as exc:
        raise _fail(f"restore failed: {exc}") from None
    typer.echo(json.dumps({"folder": str(folder), **summary}))
