"""The ``earmark`` command line: serve, keys, models, transcribe, tag, config."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(
    help="Earmark: badge and avatar audio in, tagged customer profiles out.\n\n"
    "Every option also reads an EARMARK_* environment variable (see `earmark config`).",
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(help="Create API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
eval_app = typer.Typer(help="Measure accuracy on labelled data.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
from .crm_cli import crm_app  # noqa: E402

app.add_typer(crm_app, name="crm")
err = Console(stderr=True)


def _settings():
    from .settings import get_settings

    return get_settings()


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="bind address (EARMARK_HOST, default 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option(help="port (EARMARK_PORT, default 8000)")] = None,
    workers: Annotated[Optional[int], typer.Option(help="in-process worker threads (EARMARK_WORKERS, default 1)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve the REST API (OpenAPI docs at /docs) with an in-process worker."""
    import uvicorn

    from .app import create_app, ensure_admin_key

    _setup_logging(verbose)
    settings = _settings()
    if host is not None:
        settings.host = host
    if port is not None:
        settings.port = port
    if workers is not None:
        settings.workers = workers
    key = ensure_admin_key(settings)
    if key:
        key_file = settings.data_dir / "initial-admin-key"
        key_file.write_text(key + "\n", encoding="utf-8")
        key_file.chmod(0o600)
        err.print(f"[bold green]Admin API key (shown once; also saved to {key_file}):[/]\n{key}")
    # load the models before accepting uploads: a broken install fails here, not in a job
    application = create_app(settings)
    err.print("loading models …")
    application.state.pipeline.transcriber  # noqa: B018
    application.state.pipeline.tagger  # noqa: B018
    application.state.pipeline.diarizer  # noqa: B018  (None when EARMARK_DIARIZE=false)
    err.print(f"Earmark on http://{settings.host}:{settings.port}  (docs: /docs, data: {settings.data_dir.resolve()})")
    uvicorn.run(application, host=settings.host, port=settings.port, log_level="info")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin | device | crm | qa")],
    tenant: Annotated[str, typer.Option(help="tenant id")] = "default",
    name: Annotated[str, typer.Option(help="a note: who or what uses the key")] = "",
) -> None:
    """Create an API key and print it (it is stored hashed and cannot be shown again)."""
    from .auth import ROLES, create_key
    from .db import init_db, make_engine, session_scope

    if role not in ROLES:
        err.print(f"[red]unknown role {role!r}; choose one of {', '.join(ROLES)}[/]")
        raise typer.Exit(2)
    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    init_db(engine)
    with session_scope(engine) as s:
        key = create_key(s, role=role, tenant_id=tenant, name=name)
    typer.echo(key)


@app.command("models")
def models_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List the speech models, assemble them if needed and verify their checksums."""
    import asr

    settings = _settings()
    names = asr.available_manifests()
    if settings.asr_model not in names:
        names.append(settings.asr_model)
    statuses = [asr.verify_model(n, settings.models_dir) for n in names]
    if as_json:
        typer.echo(json.dumps([
            {"name": st.name, "path": str(st.path) if st.path else None, "ok": st.ok, "problems": st.problems,
             "active": st.name == settings.asr_model, "description": st.description}
            for st in statuses
        ], ensure_ascii=False))
    else:
        table = Table("model", "active", "ok", "path", "notes")
        for st in statuses:
            table.add_row(st.name, "✓" if st.name == settings.asr_model else "", "✓" if st.ok else "✗",
                          str(st.path or ""), "; ".join(st.problems) or st.description)
        Console().print(table)
    if not all(st.ok for st in statuses if st.name == settings.asr_model):
        raise typer.Exit(1)


@app.command()
def transcribe(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="an audio file")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    language: Annotated[Optional[str], typer.Option(help="zh, en, … or auto (EARMARK_ASR_LANGUAGE)")] = None,
    no_tags: Annotated[bool, typer.Option("--no-tags", help="skip tagging")] = False,
) -> None:
    """Transcribe FILE (progress on stderr) and tag it; text or --json on stdout."""
    import asr
    import tagging

    from .db import make_engine
    from .pipeline import Pipeline

    settings = _settings()
    if language:
        settings.asr_language = language
    pipeline = Pipeline(settings, make_engine("sqlite://"))
    try:
        transcriber = pipeline.transcriber
        opts = pipeline.transcribe_options()
        segments_iter, info = transcriber.transcribe(file, opts)
    except asr.AsrError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    segments = []
    with Progress(
        TextColumn("[bold]transcribing"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal and as_json,
    ) as bar:
        task = bar.add_task("asr", total=info.duration or None)
        try:
            for seg in segments_iter:
                segments.append(seg)
                bar.update(task, completed=seg.end)
        except asr.AsrError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from exc
        bar.update(task, completed=info.duration or 0)
    discarded = [s for s in segments if s.discarded]
    segments = [s for s in segments if not s.discarded]
    tags = [] if no_tags else pipeline.tagger.tag(
        [tagging.TextSegment(index=s.index, text=s.text, start=s.start, end=s.end, speaker=s.speaker) for s in segments]
    )
    joiner = "" if (info.language or "").startswith("zh") else " "
    if as_json:
        out = {
            "language": info.language,
            "duration": round(info.duration or info.processed_duration, 3),
            "text": joiner.join(s.text for s in segments),
            "segments": [
                {"start": s.start, "end": s.end, "text": s.text, **({"speaker": s.speaker} if s.speaker else {})}
                for s in segments
            ],
            "tags": [
                {"kind": t.kind, "code": t.code, "label": t.label, "confidence": t.confidence,
                 "evidence": [{"start": e.start, "end": e.end, "quote": e.quote} for e in t.evidence]}
                for t in tags
            ],
            "discarded": [{"start": s.start, "end": s.end, "text": s.text, "reason": s.discarded} for s in discarded],
            "model": info.model,
            "wall_time": round(info.wall_time, 3),
        }
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    for s in segments:
        typer.echo(f"[{s.start:7.2f} → {s.end:7.2f}] {s.text}")
    for s in discarded:
        typer.echo(f"[{s.start:7.2f} → {s.end:7.2f}] (discarded: {s.discarded}) {s.text}")
    for t in tags:
        quotes = " | ".join(e.match for e in t.evidence)
        typer.echo(f"{t.kind:8} {t.code:24} {t.label:10} {t.confidence:.2f}  « {quotes} »")


@eval_app.command("asr")
def eval_asr(
    manifest: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="TSV with columns file, reference (files relative to the TSV)")],
    language: Annotated[Optional[str], typer.Option(help="zh, en, … or auto; default EARMARK_ASR_LANGUAGE, or a 'language' column")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object instead of the table")] = False,
) -> None:
    """Character error rate per file and overall (t2s, punctuation and spaces removed before scoring)."""
    import csv

    import asr

    from .db import make_engine
    from .pipeline import Pipeline

    settings = _settings()
    with open(manifest, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or not {"file", "reference"} <= set(rows[0]):
        err.print("[red]error:[/] the manifest needs a header with the columns 'file' and 'reference'")
        raise typer.Exit(2)
    pipeline = Pipeline(settings, make_engine("sqlite://"))
    results, errors, chars = [], 0.0, 0
    with Progress(TextColumn("[bold]evaluating"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("eval", total=len(rows))
        for row in rows:
            lang = language or row.get("language") or settings.asr_language
            settings.asr_language = lang
            opts = pipeline.transcribe_options()
            path = (manifest.parent / row["file"]).resolve()
            try:
                segs, info = pipeline.transcriber.transcribe(path, opts)
                kept = [s.text for s in segs if s.discarded is None]
            except asr.AsrError as exc:
                results.append({"file": row["file"], "error": str(exc)})
                bar.advance(task)
                continue
            hyp = ("" if lang.startswith("zh") else " ").join(kept)
            c = asr.cer(row["reference"], hyp)
            n = len(asr.normalize_for_cer(row["reference"]))
            errors, chars = errors + c * n, chars + n
            results.append({"file": row["file"], "cer": round(c, 4), "chars": n, "hypothesis": hyp,
                            "seconds": round(info.duration or 0, 2), "wall_s": round(info.wall_time, 2)})
            bar.advance(task)
    overall = round(errors / chars, 4) if chars else None
    if as_json:
        typer.echo(json.dumps({"overall_cer": overall, "files": results}, ensure_ascii=False))
    else:
        table = Table("file", "CER", "chars", "audio s", "wall s", "hypothesis")
        for r in results:
            if "error" in r:
                table.add_row(r["file"], "error", "", "", "", r["error"])
            else:
                table.add_row(r["file"], f"{r['cer']:.3f}", str(r["chars"]), f"{r['seconds']:.1f}", f"{r['wall_s']:.1f}", r["hypothesis"][:50])
        Console().print(table)
        typer.echo(f"overall CER (weighted by reference length): {overall:.3f}" if overall is not None else "no file scored")
    if any("error" in r for r in results):
        raise typer.Exit(1)


@app.command()
def tag() -> None:
    """Tag JSON Lines from stdin: {"id", "text"} or {"id", "segments": [{"speaker", "text"}]}.

    Writes one line per input: {"id", "tags": [{"kind", "code", "label", "confidence", "evidence"}]}.
    A line that cannot be read gets {"id", "error"} and the rest go on.
    """
    import tagging

    settings = _settings()
    tagger = tagging.RuleTagger(tagging.Taxonomy.load(settings.taxonomy_path))
    for lineno, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item, dict):
                raise ValueError("expected a JSON object")
            if isinstance(item.get("segments"), list):
                segs = [
                    tagging.TextSegment(index=i, text=str(s.get("text", "")), speaker=s.get("speaker"),
                                        start=s.get("start"), end=s.get("end"))
                    for i, s in enumerate(item["segments"])
                ]
            elif isinstance(item.get("text"), str):
                segs = [tagging.TextSegment(index=0, text=item["text"])]
            else:
                raise ValueError("expected 'text' (a string) or 'segments' (a list)")
        except ValueError as exc:  # JSONDecodeError is a ValueError
            typer.echo(json.dumps({"id": None, "line": lineno, "error": str(exc)}, ensure_ascii=False))
            continue
        tags = tagger.tag(segs)
        typer.echo(json.dumps({
            "id": item.get("id"),
            "tags": [
                {"kind": t.kind, "code": t.code, "label": t.label, "confidence": t.confidence,
                 "evidence": [{"segment": e.segment, "quote": e.quote, "match": e.match,
                               "start": e.start, "end": e.end} for e in t.evidence]}
                for t in tags
            ],
        }, ensure_ascii=False))
        sys.stdout.flush()


@app.command()
def config() -> None:
    """Print the effective settings (secrets masked)."""
    table = Table("setting", "value", "environment variable")
    for name, value in _settings().masked().items():
        table.add_row(name, value, f"EARMARK_{name.upper()}" if " " not in name else "")
    Console().print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
