"""`stalwart-master`: serve the API, run the Celery worker, manage the database."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Stalwart master", no_args_is_help=True, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind")] = 8080,
    migrate: Annotated[bool, typer.Option(help="Apply migrations at start")] = True,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-cert",
            help="PEM certificate (chain) to serve HTTPS with; needs --tls-key (env STALWART_TLS_CERT)",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option("--tls-key", help="PEM private key of --tls-cert, unencrypted (env STALWART_TLS_KEY)"),
    ] = None,
) -> None:
    """Run the master (migrates the database first); HTTPS when given a certificate and key."""
    from stalwart_master.settings import get_settings

    settings = get_settings()
    # The options win over STALWART_TLS_CERT / STALWART_TLS_KEY, each on its own.
    tls = settings.tls.model_copy(
        update={"cert": tls_cert or settings.tls.cert, "key": tls_key or settings.tls.key}
    )
    try:
        tls.check()
    except ValueError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    settings = settings.model_copy(update={"tls": tls})

    import uvicorn

    from stalwart_master.app import create_app

    _logging(settings.log_level)
    uvicorn.run(
        create_app(settings, migrate=migrate),
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        ssl_certfile=settings.tls.cert,
        ssl_keyfile=settings.tls.key,
    )


@app.command()
def worker(concurrency: Annotated[int, typer.Option(help="Worker processes")] = 1) -> None:
    """Run the Celery worker with its periodic scheduler (beat) embedded."""
    from stalwart_master.jobs.app import celery_app
    from stalwart_master.settings import get_settings

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    celery_app.worker_main(
        [
            "worker",
            "--beat",
            f"--schedule={settings.data_dir / 'celerybeat-schedule'}",
            f"--concurrency={concurrency}",
            f"--loglevel={settings.log_level}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (idempotent)."""
    from stalwart_master.db.migrate import upgrade
    from stalwart_master.db.session import get_engine

    _logging("INFO")
    upgrade(get_engine(), revision)


@db_app.command("dump-schema")
def db_dump_schema(
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout")] = None,
) -> None:
    """Print the migrated schema as committed in master/schema.sql."""
    from stalwart_master.db.schema_dump import dump_schema
    from stalwart_master.db.session import get_engine

    with get_engine().connect() as conn:
        text = dump_schema(conn)
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


@app.command()
def openapi(
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout")] = None,
) -> None:
    """Print the REST API's OpenAPI document; the web UI's typed client is generated from it."""
    import json

    from stalwart_master.app import create_app
    from stalwart_master.settings import DatabaseSettings, Settings

    # Building the app opens no connection: the placeholder URL is never dialled.
    settings = Settings(database=DatabaseSettings(url="postgresql://openapi.invalid/none"))
    text = json.dumps(create_app(settings, migrate=False).openapi(), indent=2, sort_keys=True) + "\n"
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


def main() -> None:
    app()
