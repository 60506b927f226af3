"""``earmark crm …``: operator commands for the CRM write-back."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

crm_app = typer.Typer(help="CRM write-back: replay changes to webhook subscribers.", no_args_is_help=True)


@crm_app.command("replay")
def replay(
    after: Annotated[int, typer.Option("--after", min=0, help="replay every change with a cursor above this")],
    tenant: Annotated[str, typer.Option(help="tenant id")] = "default",
    webhook: Annotated[Optional[str], typer.Option(help="only this subscription (ep_…); default: every enabled one")] = None,
    stdout: Annotated[bool, typer.Option("--stdout", help="print the changes as JSON lines instead of queueing deliveries")] = False,
) -> None:
    """Send the changes after CURSOR to webhook subscribers again, in order and with their original
    webhook-ids (a running server delivers them within a second). With --stdout, print them as JSON
    lines in the change feed's shape (for a CRM import)."""
    from . import crud, schemas
    from .db import init_db, make_engine, session_scope
    from .errors import NotFound
    from .settings import get_settings

    settings = get_settings()
    engine = make_engine(settings.db_url)
    init_db(engine)
    if stdout:
        cursor = after
        while True:
            with session_scope(engine) as s:
                rows = crud.list_changes(s, tenant_id=tenant, after=cursor, limit=1000)
                lines = [schemas.change_out(c).model_dump_json() for c in rows]
            for line in lines:
                typer.echo(line)
            if not rows:
                break
            cursor = json.loads(lines[-1])["cursor"]
        return
    try:
        with session_scope(engine) as s:
            n = crud.replay_deliveries(s, tenant_id=tenant, after=after, endpoint_id=webhook)
    except NotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"queued {n} deliveries (changes after cursor {after})")
