"""The ``earmark`` command line: serve, keys, models, transcribe, tag, train, eval, config."""

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


models_app = typer.Typer(
    help="Speech models and tagger versions: list and check them (no subcommand), activate, roll back.",
    invoke_without_command=True,
)
app.add_typer(models_app, name="models")


def _registry(settings):
    from tagging.registry import TaggerRegistry

    return TaggerRegistry(settings.tagger_path)


@models_app.callback()
def models_cmd(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List the speech models (assembled if needed, checksums verified) and the tagger versions."""
    if ctx.invoked_subcommand is not None:
        return
    import asr

    settings = _settings()
    names = asr.available_manifests()
    if settings.asr_model not in names:
        names.append(settings.asr_model)
    statuses = [asr.verify_model(n, settings.models_dir) for n in names]
    registry = _registry(settings)
    active = settings.tagger_version or registry.active()
    taggers = registry.versions()
    if as_json:
        typer.echo(json.dumps([
            {"name": st.name, "path": str(st.path) if st.path else None, "ok": st.ok, "problems": st.problems,
             "active": st.name == settings.asr_model, "description": st.description}
            for st in statuses
        ] + [
            {"name": v.version, "kind": "tagger", "path": str(v.directory) if v.directory else None, "ok": True,
             "active": v.version == active, "bundled": v.bundled, "created_at": v.created_at, "eval": v.eval}
            for v in taggers
        ], ensure_ascii=False))
    else:
        table = Table("model", "active", "ok", "path", "notes")
        for st in statuses:
            table.add_row(st.name, "✓" if st.name == settings.asr_model else "", "✓" if st.ok else "✗",
                          str(st.path or ""), "; ".join(st.problems) or st.description)
        Console().print(table)
        table = Table("tagger version", "active", "where", "created", "training items", "F1 project/concern/intent")
        for v in taggers:
            f1 = ""
            if v.eval:
                first = next(iter(v.eval.values()))
                f1 = " / ".join(f"{first.get(k, 0):.3f}" for k in ("project", "concern", "intent"))
            where = "rules only" if v.directory is None else ("bundled" if v.bundled else str(v.directory))
            table.add_row(v.version, "✓" if v.version == active else "", where, v.created_at, str(v.training_items or ""), f1)
        Console().print(table)
    if not all(st.ok for st in statuses if st.name == settings.asr_model):
        raise typer.Exit(1)


def _gate_score(report) -> float:
    return round(sum(report.f1(k) for k in ("project", "concern", "intent")) / 3, 4)


@models_app.command("activate")
def models_activate(
    version: Annotated[str, typer.Argument(help="a tagger version from `earmark models`, or 'rules'")],
    force: Annotated[bool, typer.Option("--force", help="activate even if it scores below the active version")] = False,
    gold: Annotated[Optional[list[Path]], typer.Option(help="evaluation set(s); default the bundled development set")] = None,
) -> None:
    """Make VERSION the tagger for new recordings (a running service switches within seconds).

    Refused when VERSION scores below the active version on the evaluation set (mean F1 over the
    three families), unless --force.
    """
    import tagging
    from tagging.evaluate import evaluate, load_gold

    settings = _settings()
    registry = _registry(settings)
    taxonomy = tagging.Taxonomy.load(settings.taxonomy_path)
    try:
        registry.get(version)
        current = registry.active()
        if not force and version != current:
            for path in gold or _default_eval_sets():
                items = load_gold(path)
                new = _gate_score(evaluate(registry.load(taxonomy, version).tag, items))
                old = _gate_score(evaluate(registry.load(taxonomy, current).tag, items))
                err.print(f"{path.name}: {version} {new:.4f} vs active {current} {old:.4f} (mean F1)")
                if new < old:
                    err.print(f"[red]refused:[/] {version} scores below the active version on {path.name}; use --force to override")
                    raise typer.Exit(1)
        previous = registry.activate(version)
    except tagging.TaggingError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    typer.echo(f"active tagger: {version} (was {previous}; `earmark models rollback` goes back)")


@models_app.command("rollback")
def models_rollback() -> None:
    """Go back to the tagger version that was active before the last switch."""
    import tagging

    registry = _registry(_settings())
    try:
        current = registry.active()
        previous = registry.rollback()
    except tagging.TaggingError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    typer.echo(f"active tagger: {previous} (was {current})")


def _bundled_data() -> Path:
    from importlib import resources

    return Path(str(resources.files("tagging"))) / "data"


def _default_eval_sets() -> list[Path]:
    return [p for p in (_bundled_data() / "dev.jsonl", _bundled_data() / "dev_asr.jsonl") if p.is_file()]


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


def _print_report(name: str, report, baseline=None, *, per_code: bool = True) -> None:
    table = Table("family", "precision", "recall", "F1", "support", *(["keyword F1", "Δ F1"] if baseline else []),
                  title=name)
    for kind in ("project", "concern", "intent"):
        f = report.family[kind]
        row = [kind, f"{f.precision:.3f}", f"{f.recall:.3f}", f"{f.f1:.3f}", str(f.support)]
        if baseline:
            b = baseline.family[kind]
            row += [f"{b.f1:.3f}", f"{f.f1 - b.f1:+.3f}"]
        table.add_row(*row)
    Console().print(table)
    if per_code:
        table = Table("tag", "precision", "recall", "F1", "support", *(["keyword F1"] if baseline else []))
        for key, f in sorted(report.code.items()):
            row = [f"{key[0]}.{key[1]}", f"{f.precision:.2f}", f"{f.recall:.2f}", f"{f.f1:.2f}", str(f.support)]
            if baseline:
                b = baseline.code.get(key)
                row.append(f"{b.f1:.2f}" if b else "-")
            table.add_row(*row)
        Console().print(table)


@eval_app.command("tagging")
def eval_tagging(
    gold: Annotated[Path, typer.Option(exists=True, dir_okay=False, help='JSON Lines: {"id", "text" or "segments", "project", "concern", "intent"}')],
    tagger: Annotated[Optional[str], typer.Option(help="a tagger version, 'rules', or the active one (default)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object instead of the tables")] = False,
    errors: Annotated[int, typer.Option(help="print this many wrongly tagged items")] = 0,
    per_code: Annotated[bool, typer.Option("--per-code/--families-only", help="the per-code table")] = True,
) -> None:
    """Precision, recall and F1 per family and per code, with the keyword-only baseline beside them."""
    import tagging
    from tagging.evaluate import evaluate, load_gold
    from tagging.keyword import KeywordTagger

    settings = _settings()
    try:
        items = load_gold(gold)
        taxonomy = tagging.Taxonomy.load(settings.taxonomy_path)
        registry = _registry(settings)
        version = tagger or settings.tagger_version or registry.active()
        model = registry.load(taxonomy, version)
    except tagging.TaggingError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    report = evaluate(model.tag, items)
    baseline = evaluate(KeywordTagger(taxonomy).tag, items)
    if as_json:
        typer.echo(json.dumps({"tagger": version, "gold": str(gold), "report": report.as_dict(),
                               "keyword_baseline": baseline.as_dict(), "errors": report.errors[:errors]},
                              ensure_ascii=False))
        return
    _print_report(f"{gold.name}: {len(items)} items, tagger {version}", report, baseline, per_code=per_code)
    for e in report.errors[:errors]:
        typer.echo(f"{e['id']}: missed {e['missed']} extra {e['extra']}  {e['text'][:120]}")


@app.command()
def train(
    data: Annotated[Optional[list[Path]], typer.Option(help="more labelled JSON Lines to train on (repeatable)")] = None,
    reviews: Annotated[bool, typer.Option("--reviews/--no-reviews", help="train on QA decisions stored in the database")] = True,
    bundled: Annotated[bool, typer.Option("--bundled/--no-bundled", help="train on the bundled training set")] = True,
    gold: Annotated[Optional[list[Path]], typer.Option(help="evaluation set(s); default the bundled development set and its ASR twin")] = None,
    activate: Annotated[bool, typer.Option("--activate", help="activate the new version when it passes the gate")] = False,
    version: Annotated[Optional[str], typer.Option(help="the new version's name (default tg-<UTC time>)")] = None,
    epochs: Annotated[int, typer.Option(min=1, max=500, help="training epochs")] = 40,
    folds: Annotated[int, typer.Option(min=2, max=10, help="folds for out-of-fold calibration")] = 5,
) -> None:
    """Build a new tagger version from labelled data and QA corrections.

    Trains the learned model (torch), calibrates it with the rules on out-of-fold predictions,
    exports ONNX (checked against torch), evaluates it beside the active version and the keyword
    baseline, and writes it with a model card under the tagger directory. A version that scores
    below the active one on an evaluation set is not kept.
    """
    import shutil

    import tagging
    from tagging.evaluate import evaluate, load_gold, parse_gold_line
    from tagging.keyword import KeywordTagger
    from tagging.training import TrainOptions, train_version, write_card

    settings = _settings()
    registry = _registry(settings)
    taxonomy = tagging.Taxonomy.load(settings.taxonomy_path)
    items, sources = [], {}
    try:
        if bundled:
            got = load_gold(_bundled_data() / "train.jsonl")
            items += got
            sources["bundled training set"] = len(got)
        for path in data or []:
            got = load_gold(path)
            items += got
            sources[str(path)] = len(got)
        if reviews:
            from . import crud
            from .db import init_db, make_engine, session_scope

            settings.data_dir.mkdir(parents=True, exist_ok=True)
            engine = make_engine(settings.db_url)
            init_db(engine)
            with session_scope(engine) as s:
                got = [parse_gold_line(x, where=x["id"]) for x in crud.reviewed_conversations(s)]
            engine.dispose()
            items += got
            sources["QA-reviewed conversations"] = len(got)
        err.print("training on " + ", ".join(f"{v} from {k}" for k, v in sources.items()))
        active = settings.tagger_version or registry.active()  # before the new version exists
        with Progress(TextColumn("[bold]{task.description}"), TimeElapsedColumn(), console=err, transient=True) as bar:
            task = bar.add_task("training", total=None)
            result = train_version(
                items, taxonomy, settings.tagger_path, version=version,
                options=TrainOptions(epochs=epochs, folds=folds), sources=sources,
                progress=lambda msg: bar.update(task, description=msg),
            )
        candidate = registry.load(taxonomy, result.version)
        current = registry.load(taxonomy, active)
        passed = True
        meta_path = result.directory / "tagger.json"
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["eval"] = {}
        for path in gold or _default_eval_sets():
            gold_items = load_gold(path)
            cand, cur = evaluate(candidate.tag, gold_items), evaluate(current.tag, gold_items)
            base = evaluate(KeywordTagger(taxonomy).tag, gold_items)
            result.evaluations[path.name] = {"candidate": cand.as_dict(), "active": cur.as_dict(),
                                             "active_version": active, "keywords": base.as_dict()}
            meta["eval"][path.name] = {k: round(cand.f1(k), 4) for k in ("project", "concern", "intent")}
            _print_report(f"{path.name}: candidate {result.version}", cand, base, per_code=False)
            _print_report(f"{path.name}: active {active}", cur, per_code=False)
            if _gate_score(cand) < _gate_score(cur):
                passed = False
                err.print(f"[red]{result.version} scores {_gate_score(cand):.4f} on {path.name}, below the active "
                          f"{active} ({_gate_score(cur):.4f}): not kept[/]")
    except tagging.TaggingError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    if not passed:
        shutil.rmtree(result.directory, ignore_errors=True)
        raise typer.Exit(1)
    meta_path.write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
    write_card(result.directory, result)
    typer.echo(f"new tagger version {result.version} at {result.directory} ({result.items} items, "
               f"{result.seconds:.0f} s, ONNX parity {result.parity_max_abs_diff:.1e}); model card: card.md")
    if activate:
        previous = registry.activate(result.version)
        typer.echo(f"active tagger: {result.version} (was {previous})")
    else:
        typer.echo(f"activate it with: earmark models activate {result.version}")


@app.command()
def tag() -> None:
    """Tag JSON Lines from stdin: {"id", "text"} or {"id", "segments": [{"speaker", "text"}]}.

    Writes one line per input: {"id", "tags": [{"kind", "code", "label", "confidence", "evidence"}]}.
    A line that cannot be read gets {"id", "error"} and the rest go on.
    """
    import tagging

    settings = _settings()
    try:
        tagger = _registry(settings).load(tagging.Taxonomy.load(settings.taxonomy_path), settings.tagger_version)
    except tagging.TaggingError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
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
