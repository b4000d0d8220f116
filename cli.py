"""The `loa` command line. Every command is a thin shell over the service functions the API uses;
domain errors become one readable line and a non-zero exit here, and nowhere else."""

from __future__ import annotations

import getpass
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click
import yaml
from pydantic import ValidationError
from sqlalchemy import Engine

from loa import schema
from loa.apikeys import Role
from loa.clock import system_clock
from loa.db import check_database, make_engine, redacted, session_scope
from loa.errors import LoaError
from loa.logs import configure_logging
from loa.paging import DEFAULT_PAGE, MAX_PAGE
from loa.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
DEMO_DIR = Path(__file__).resolve().parent / "demo"


class LoaGroup(click.Group):
    """Turns domain errors and unusable settings into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LoaError as exc:
            raise click.ClickException(exc.message) from None
        except ValidationError as exc:  # from Settings(): a LOA_ variable with a bad value
            problems = "; ".join(
                f"LOA_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                for e in exc.errors()
            )
            raise click.ClickException(f"bad setting: {problems}") from None


def _settings() -> Settings:
    return Settings()


def _open_database(settings: Settings, *, require_schema: bool = True) -> Engine:
    engine = make_engine(settings)
    check_database(engine)
    if require_schema:
        schema.require_current(engine)
    return engine


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _print_table(rows: list[list[str]], *, right_from: int | None = None) -> None:
    """Rows as aligned columns; columns from `right_from` on (numbers) are right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(widths[i])
            if right_from is not None and i >= right_from
            else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        click.echo("  ".join(cells).rstrip())


# Every list that can be long is read a keyset page at a time (loa/paging.py), as over the API.
_limit_option = click.option(
    "--limit",
    type=click.IntRange(1, MAX_PAGE),
    default=DEFAULT_PAGE,
    show_default=True,
    help="Rows per page.",
)
_after_option = click.option(
    "--after", default=None, metavar="CURSOR", help="Start after this page (printed under it)."
)


def _echo_page_end(shown: int, next_after: str | None) -> None:
    if next_after is None:
        click.echo(f"{shown} shown; that is the end of the list")
    else:
        click.echo(f"{shown} shown; more with: --after {next_after}")


@click.group(cls=LoaGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Loa: public-information campaigns by SMS and commune loudspeaker.

    Settings come from LOA_ environment variables (LOA_DATA_DIR, LOA_DATABASE_URL, ...);
    with none set, Loa keeps a SQLite database in ./data.
    """


# --- database ---------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to this version of Loa."""
    settings = _settings()
    engine = _open_database(settings, require_schema=False)
    before = schema.current_revision(engine)
    schema.upgrade(engine)
    after = schema.current_revision(engine)
    where = redacted(settings.database_url)
    if before == after:
        click.echo(f"database {where} is already at revision {after}")
    else:
        click.echo(f"database {where} upgraded from {before or 'empty'} to {after}")


# --- long-running processes -------------------------------------------------------------------


@main.command()
@click.option("--host", default=None, help="Interface to listen on (default: LOA_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default: LOA_PORT, 8000).")
@click.option("--no-worker", is_flag=True, help="Do not run a dispatch worker in this process.")
@click.option("--no-scheduler", is_flag=True, help="Do not run the scheduler in this process.")
def serve(host: str | None, port: int | None, no_worker: bool, no_scheduler: bool) -> None:
    """Run the API, with the scheduler and one dispatch worker unless told otherwise."""
    import uvicorn

    from api.app import create_app

    settings = _settings()
    if not no_worker:
        from channels.registry import check_channel

        check_channel("sms", settings)  # a worker that could not send refuses to start
    configure_logging(settings)
    engine = _open_database(settings)
    app = create_app(settings, engine, with_worker=not no_worker, with_scheduler=not no_scheduler)
    uvicorn.run(
        app,
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
        # uvicorn's own records (start-up, access log) go through the handler configured
        # above, so that with LOA_LOG_FORMAT=json every line is JSON.
        log_config=None,
    )


def _run_until_signalled(start: Callable[[], None], stop: Callable[[], None]) -> None:
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    start()
    stopping.wait()
    stop()


@main.command()
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve this worker's own Prometheus metrics (its send attempts and errors) on this "
    "port of LOA_HOST (default: LOA_WORKER_METRICS_PORT; none when unset). LOA_METRICS_TOKEN "
    "applies.",
)
def worker(metrics_port: int | None) -> None:
    """Run a dispatch worker: claim due messages and send them. Run as many as you like."""
    from channels.registry import channel_lookup, check_channel
    from loa.metrics import serve_process_metrics
    from scheduler.service import DispatchWorker

    settings = _settings()
    check_channel("sms", settings)  # a worker that could not send refuses to start
    configure_logging(settings)
    engine = _open_database(settings)
    dispatcher = DispatchWorker(engine, settings, system_clock, channel_lookup(settings))
    port = metrics_port if metrics_port is not None else settings.worker_metrics_port
    if not port:
        _run_until_signalled(dispatcher.start, dispatcher.stop)
        return
    bound, stop_metrics = serve_process_metrics(
        settings.host, port, settings.metrics_token.get_secret_value()
    )
    click.echo(f"worker metrics at http://{settings.host}:{bound}/metrics", err=True)

    def stop() -> None:
        dispatcher.stop()
        stop_metrics()

    _run_until_signalled(dispatcher.start, stop)


@main.command("scheduler")
def scheduler_command() -> None:
    """Run the scheduler. Start it on two machines: one is active, the other stands by."""
    from scheduler.service import SchedulerService

    settings = _settings()
    configure_logging(settings)
    engine = _open_database(settings)
    service = SchedulerService(engine, settings, system_clock)
    _run_until_signalled(service.start, service.shutdown)


# --- areas and recipients ---------------------------------------------------------------------


@main.group()
def areas() -> None:
    """Administrative areas (province > district > commune)."""


@areas.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def areas_import(file: Path) -> None:
    """Import areas from a CSV with columns code,name,level,parent_code."""
    from audience.areas import import_areas

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        result = import_areas(session, file)
    click.echo(f"{file}: {result}")


@areas.command("load")
@click.option(
    "--province",
    "province_code",
    required=True,
    help="Province code (two digits, e.g. 42); `loa areas provinces` lists them.",
)
def areas_load(province_code: str) -> None:
    """Load a province and its communes from the vietnam-provinces dataset (re-runnable)."""
    from audience.areas import dataset_version, load_province

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        result = load_province(session, province_code)
    click.echo(
        f"province {province_code.strip()} from {dataset_version()}: {result.rows_read} areas, "
        f"{result.inserted} added, {result.updated} updated, {result.unchanged} unchanged"
    )


@areas.command("provinces")
def areas_provinces() -> None:
    """List the province codes `loa areas load --province` accepts."""
    from audience.areas import dataset_version, provinces

    click.echo(f"# {dataset_version()}")
    for province in provinces():
        click.echo(f"{province.code}  {province.name}")


@main.group()
def recipients() -> None:
    """People who receive messages."""


@recipients.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--report",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write rejected rows here as CSV (line,column,value,reason).",
)
@click.option("--dry-run", is_flag=True, help="Validate and report; write nothing.")
@click.option(
    "--column",
    "column_pairs",
    multiple=True,
    metavar="ROLE=HEADER",
    help="Which column is the phone, name, area or tags, e.g. --column phone=SĐT "
    '--column name="Họ tên" (repeatable); roles not given are guessed from the headers.',
)
@click.option("--sheet", default=None, help="The sheet of an XLSX workbook (default: the first).")
def recipients_import(
    file: Path,
    report: Path | None,
    dry_run: bool,
    column_pairs: tuple[str, ...],
    sheet: str | None,
) -> None:
    """Import recipients from a CSV (UTF-8, comma or semicolon) or XLSX file (one sheet).

    Bad rows are reported (line, column, value, reason) and good rows imported. A file that
    cannot be read at all fails whole and writes nothing.
    """
    from audience.importer import audit_import, import_recipients, parse_column_mapping

    settings = _settings()
    columns = parse_column_mapping(column_pairs)
    engine = _open_database(settings)
    now = system_clock()
    with _import_progress(file) as progress, session_scope(engine) as session:
        result = import_recipients(
            session,
            file,
            now=now,
            dry_run=dry_run,
            columns=columns,
            max_line_bytes=settings.import_max_line_bytes,
            allow_converted=settings.convert_old_numbers,
            progress=progress,
            sheet=sheet,
        )
        if not dry_run:
            audit_import(session, result, actor=_actor(), source=str(file), now=now)
    verb = "would import" if dry_run else "imported"
    click.echo(
        f"{file}: {result.rows_read} rows read, {verb} {result.inserted} new and "
        f"{result.updated} updated, {len(result.rejected)} rejected"
    )
    if result.unread_sheets:
        click.echo(
            f"note: other sheets of the workbook were not read: "
            f"{', '.join(repr(s) for s in result.unread_sheets)} (import each with --sheet NAME)",
            err=True,
        )
    for row in result.rejected[:10]:
        click.echo(f"  line {row.line}, {row.column} {row.value!r}: {row.reason}", err=True)
    if len(result.rejected) > 10:
        click.echo(f"  ... and {len(result.rejected) - 10} more", err=True)
    if report is not None:
        result.write_csv(report)
        click.echo(f"rejected rows written to {report}")


@recipients.command("search")
@click.option("--phone", default=None, help="Any usual form: 0912 345 678, 84912345678, +84...")
@click.option("--name", default=None, help="The start of the name, case as written.")
@click.option("--area", default=None, help="An area code; its sub-areas too.")
@click.option("--tag", default=None)
@_limit_option
@_after_option
def recipients_search(
    phone: str | None,
    name: str | None,
    area: str | None,
    tag: str | None,
    limit: int,
    after: str | None,
) -> None:
    """Recipients matching every filter given, by id, a page at a time (the search of
    GET /api/v1/recipients; the CLI reads the database, so it shows whole numbers)."""
    from audience.lookup import RecipientQuery, search_recipients

    engine = _open_database(_settings())
    query = RecipientQuery(phone=phone, name=name, area=area, tag=tag)
    with session_scope(engine) as session:
        rows, next_after = search_recipients(session, query, after=after, limit=limit)
    table = [["id", "phone", "name", "area", "carrier", "tags"]]
    for r in rows:
        converted = " (converted)" if r.phone_converted else ""
        table.append(
            [
                str(r.id),
                r.phone + converted,
                r.name or "",
                r.area_code or "",
                r.carrier or "",
                ",".join(sorted(r.tags)),
            ]
        )
    if rows:
        _print_table(table)
    elif after is None:
        click.echo("no recipient matches")
    _echo_page_end(len(rows), next_after)


@recipients.command("show")
@click.argument("recipient_id", type=int)
def recipients_show(recipient_id: int) -> None:
    """One recipient with its tags and attributes."""
    from audience.lookup import get_recipient

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        recipient = get_recipient(session, recipient_id)
    converted = " (an old 11-digit number, converted)" if recipient.phone_converted else ""
    click.echo(f"recipient {recipient.id}: {recipient.phone}{converted}")
    click.echo(f"  name: {recipient.name or '-'}")
    click.echo(f"  area: {recipient.area_code or '-'}")
    click.echo(f"  carrier (from the prefix, an estimate): {recipient.carrier or '-'}")
    click.echo(f"  tags: {', '.join(sorted(recipient.tags)) or '-'}")
    for key, value in sorted(recipient.attributes.items()):
        click.echo(f"  {key}: {value}")
    click.echo(
        f"  created {recipient.created_at:%Y-%m-%d %H:%M}, "
        f"changed {recipient.updated_at:%Y-%m-%d %H:%M} (UTC)"
    )


@contextmanager
def _import_progress(file: Path) -> Iterator[Callable[[int, float | None], None] | None]:
    """A progress bar on stderr while an import runs, when stderr is a terminal (in a pipe or a
    log it would only be noise). It moves after each chunk written."""
    if not sys.stderr.isatty():
        yield None
        return
    steps = 1000

    def show(rows: int | None) -> str | None:
        return f"{rows:,} rows" if rows is not None else None

    with click.progressbar(
        length=steps, label=f"importing {file.name}", file=sys.stderr, item_show_func=show
    ) as bar:

        def advance(read: int, done: float | None) -> None:
            target = round((done or 0) * steps)
            bar.update(max(0, target - bar.pos), current_item=read)

        yield advance


# --- suppression and consent ------------------------------------------------------------------


def _echo_list_import(file: Path, result: Any, dry_run: bool, report: Path | None) -> None:
    """The summary of a phone-list import, its first rejected rows, and the report file."""
    verb = "would add" if dry_run else "added"
    click.echo(
        f"{file}: {result.rows_read} rows read, {verb} {result.added} new and "
        f"{result.updated} already listed, {len(result.rejected)} rejected"
    )
    if result.ignored_columns:
        click.echo(f"  columns ignored: {', '.join(result.ignored_columns)}", err=True)
    for row in result.rejected[:10]:
        click.echo(f"  line {row.line}, {row.column} {row.value!r}: {row.reason}", err=True)
    if len(result.rejected) > 10:
        click.echo(f"  ... and {len(result.rejected) - 10} more", err=True)
    if report is not None:
        result.write_csv(report)
        click.echo(f"rejected rows written to {report}")


@main.group()
def suppression() -> None:
    """Numbers that must not receive messages (opt-outs, do-not-contact list, invalid, manual)."""


@suppression.command("add")
@click.argument("phone")
@click.option(
    "--reason",
    default="manual",
    show_default=True,
    help="opt_out, do_not_contact, invalid or manual.",
)
@click.option("--note", default=None, help="Why, for whoever reads the list later.")
def suppression_add(phone: str, reason: str, note: str | None) -> None:
    """Put PHONE on the suppression list (an opt_out already there stays opt_out)."""
    from audience.suppression import add_suppression

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        row = add_suppression(
            session, phone, reason=reason, note=note, actor=_actor(), now=system_clock()
        )
    click.echo(f"{row.phone} suppressed ({row.reason})")


@suppression.command("remove")
@click.argument("phone")
@click.option(
    "--opt-out-withdrawn",
    is_flag=True,
    help="Needed to remove an opt_out: the person asked to receive messages again.",
)
@click.option("--note", default=None, help="Why (kept in the audit log).")
def suppression_remove(phone: str, opt_out_withdrawn: bool, note: str | None) -> None:
    """Take PHONE off the suppression list."""
    from audience.suppression import remove_suppression

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        row = remove_suppression(
            session,
            phone,
            actor=_actor(),
            now=system_clock(),
            opt_out_withdrawn=opt_out_withdrawn,
            note=note,
        )
    click.echo(f"{row.phone} removed from the suppression list (was {row.reason})")


@suppression.command("list")
@click.option("--reason", default=None, help="Only this reason.")
@_limit_option
@_after_option
def suppression_list(reason: str | None, limit: int, after: str | None) -> None:
    """The suppression list, newest first, a page at a time."""
    from audience.suppression import list_suppressions

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        rows, next_after = list_suppressions(session, reason=reason, after=after, limit=limit)
    table = [["phone", "reason", "since (UTC)", "note"]]
    table += [[r.phone, r.reason, f"{r.created_at:%Y-%m-%d %H:%M}", r.note or ""] for r in rows]
    if rows:
        _print_table(table)
    _echo_page_end(len(rows), next_after)


@suppression.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--reason",
    default="do_not_contact",
    show_default=True,
    help="Reason of rows without a reason column (or with it empty).",
)
@click.option(
    "--report",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write rejected rows here as CSV (line,column,value,reason).",
)
@click.option("--dry-run", is_flag=True, help="Validate and report; write nothing.")
def suppression_import(file: Path, reason: str, report: Path | None, dry_run: bool) -> None:
    """Add the numbers of a CSV file (a phone column; optional reason and note) to the list.

    Nothing is ever removed by an import, and an opt_out keeps its reason."""
    from audience.suppression import import_suppressions

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        result = import_suppressions(
            session,
            file,
            now=system_clock(),
            actor=_actor(),
            default_reason=reason,
            dry_run=dry_run,
        )
    _echo_list_import(file, result, dry_run, report)
    if result.kept_opt_out:
        click.echo(f"  {result.kept_opt_out} number(s) had opted out and stay opt_out", err=True)


@suppression.command("inbound")
@click.option("--from", "from_phone", required=True, help="The number the SMS came from.")
@click.argument("text")
def suppression_inbound(from_phone: str, text: str) -> None:
    """Record an SMS received elsewhere: if TEXT is an opt-out keyword (LOA_OPT_OUT_KEYWORDS),
    the sender is suppressed and any consent to advertising withdrawn; if it is an opt-in
    keyword (LOA_OPT_IN_KEYWORDS), the sender's consent is recorded."""
    from audience.keywords import InboundKind
    from audience.suppression import apply_inbound

    settings = _settings()
    engine = _open_database(settings)
    with session_scope(engine) as session:
        result = apply_inbound(
            session,
            from_phone,
            text,
            now=system_clock(),
            keywords=settings.opt_out_keywords,
            opt_in_keywords=settings.opt_in_keywords,
            actor=_actor(),
        )
    if result.kind == InboundKind.OPT_OUT:
        withdrawn = "; consent to advertising withdrawn" if result.consent_withdrawn else ""
        click.echo(f"{result.phone} opted out ({result.keyword}): suppressed{withdrawn}")
    elif result.kind == InboundKind.OPT_IN:
        lifted = "; their earlier opt-out is lifted" if result.opt_out_lifted else ""
        still = "; still on the suppression list for another reason" if result.suppressed else ""
        click.echo(f"{result.phone} agreed ({result.keyword}): consent recorded{lifted}{still}")
    elif result.kind == InboundKind.MENTIONS_KEYWORD:
        click.echo(
            f"not an opt-out: the text mentions {result.keyword} inside a longer message; "
            f"if the person meant to refuse, run: loa suppression add {result.phone} "
            "--reason opt_out"
        )
    else:
        click.echo("not a keyword: nothing recorded")


@main.group()
def consent() -> None:
    """Recorded consent to advertising (class qc), which qc waves need."""


@consent.command("add")
@click.argument("phone")
@click.option("--note", default=None, help="How the consent was given (form, call, ...).")
def consent_add(phone: str, note: str | None) -> None:
    """Record PHONE's consent to advertising."""
    from audience.consent import add_consent
    from loa.models import Suppression

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        row = add_consent(session, phone, note=note, actor=_actor(), now=system_clock())
        listed = session.get(Suppression, row.phone)
    click.echo(f"{row.phone}: consent recorded")
    if listed is not None:
        click.echo(
            f"note: {row.phone} is on the suppression list ({listed.reason}); nothing is sent "
            "to it while it is",
            err=True,
        )


@consent.command("remove")
@click.argument("phone")
def consent_remove(phone: str) -> None:
    """Withdraw PHONE's consent: its qc messages not yet sent are suppressed."""
    from audience.consent import remove_consent

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        row = remove_consent(session, phone, actor=_actor(), now=system_clock())
    click.echo(f"{row.phone}: consent withdrawn")


@consent.command("list")
@_limit_option
@_after_option
def consent_list(limit: int, after: str | None) -> None:
    """Recorded consents, newest first, a page at a time."""
    from audience.consent import list_consents

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        rows, next_after = list_consents(session, after=after, limit=limit)
    table = [["phone", "source", "given (UTC)", "note"]]
    table += [[r.phone, r.source, f"{r.given_at:%Y-%m-%d %H:%M}", r.note or ""] for r in rows]
    if rows:
        _print_table(table)
    _echo_page_end(len(rows), next_after)


@consent.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--report",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write rejected rows here as CSV (line,column,value,reason).",
)
@click.option("--dry-run", is_flag=True, help="Validate and report; write nothing.")
def consent_import(file: Path, report: Path | None, dry_run: bool) -> None:
    """Record the consents of a CSV file: a phone column; optional given_at (dd/mm/yyyy, local
    date in LOA_DEFAULT_TIMEZONE) and note."""
    from audience.consent import import_consents

    settings = _settings()
    engine = _open_database(settings)
    with session_scope(engine) as session:
        result = import_consents(
            session,
            file,
            now=system_clock(),
            actor=_actor(),
            zone=ZoneInfo(settings.default_timezone),
            dry_run=dry_run,
        )
    _echo_list_import(file, result, dry_run, report)
    if result.suppressed:
        click.echo(
            f"  {result.suppressed} of these number(s) are on the suppression list: nothing is "
            "sent to them while they are",
            err=True,
        )


# --- audio (loudspeaker files) ---------------------------------------------------------------


@main.group()
def audio() -> None:
    """Loudspeaker audio: add files (normalised, trimmed, encoded), list and show them."""


def _audio_source(path: Path | None) -> Any:
    from audio.ingest import Source

    return None if path is None else Source(path, str(path))


@audio.command("add")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--name", default=None, help="A name to list it by (default: the file's name).")
@click.option(
    "--intro",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="A jingle played before it (normalised the same way).",
)
@click.option(
    "--outro",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="A jingle played after it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the stored asset as JSON.")
def audio_add(
    file: Path, name: str | None, intro: Path | None, outro: Path | None, as_json: bool
) -> None:
    """Add WAV, MP3, M4A/AAC, OGG or FLAC: checked, trimmed, normalised to LOA_AUDIO_TARGET_LUFS
    under LOA_AUDIO_TRUE_PEAK_DBTP, encoded as mono MP3 and stored by its SHA-256."""
    from audio.ingest import add_audio

    settings = _settings()
    engine = _open_database(settings)
    result = add_audio(
        engine,
        _audio_source(file),
        settings=settings,
        actor=_actor(),
        now=system_clock(),
        name=name,
        intro=_audio_source(intro),
        outro=_audio_source(outro),
    )
    asset = result.asset
    if as_json:
        click.echo(json.dumps({**asset.model_dump(mode="json"), "created": result.created}))
        return
    if not result.created:
        click.echo(f"already stored as {asset.name!r}: {asset.sha256}")
        return
    click.echo(
        f"added {asset.name!r}: {asset.sha256}\n"
        f"  {asset.duration_ms / 1000:.1f} s ({result.trimmed_ms} ms of silence trimmed), "
        f"{asset.bytes:,} bytes, {asset.bitrate_kbps} kbit/s mono, {asset.sample_rate} Hz\n"
        f"  loudness {asset.loudness_before_lufs:.1f} -> {asset.loudness_after_lufs:.1f} LUFS, "
        f"true peak {asset.true_peak_dbtp:.1f} dBTP"
    )


@audio.command("list")
@_limit_option
@_after_option
def audio_list(limit: int, after: str | None) -> None:
    """Stored audio, newest first, a page at a time."""
    from audio.store import list_assets

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        assets, next_after = list_assets(session, after=after, limit=limit)
    if not assets:
        click.echo("no audio stored" if after is None else "no more audio")
        return
    rows = [["sha256", "name", "seconds", "LUFS", "dBTP", "bytes"]]
    rows += [
        [
            a.sha256[:16],
            a.name,
            f"{a.duration_ms / 1000:.1f}",
            f"{a.loudness_after_lufs:.1f}",
            f"{a.true_peak_dbtp:.1f}",
            f"{a.bytes:,}",
        ]
        for a in assets
    ]
    _print_table(rows, right_from=2)
    _echo_page_end(len(assets), next_after)


@audio.command("show")
@click.argument("sha256")
def audio_show(sha256: str) -> None:
    """One stored file's record, as JSON, with where it is on disk."""
    from audio.store import asset_path, get_asset

    settings = _settings()
    engine = _open_database(settings)
    with session_scope(engine) as session:
        asset = get_asset(session, sha256)
    record = asset.model_dump(mode="json")
    record["path"] = str(asset_path(settings.data_dir, asset.sha256))
    click.echo(json.dumps(record, ensure_ascii=False, indent=2))


# --- loudspeaker controllers ------------------------------------------------------------------


@main.group()
def loudspeaker() -> None:
    """Loudspeaker controllers that take pushed playlists (LOA_LOUDSPEAKER_ENDPOINTS_FILE)."""


@loudspeaker.command("ping")
@click.argument("area_code")
@click.option(
    "--attempts",
    type=click.IntRange(1, 20),
    default=1,
    show_default=True,
    help="Attempts before giving up (retries back off as a real push does).",
)
def loudspeaker_ping(area_code: str, attempts: int) -> None:
    """Send a signed test push (no items) to the endpoint serving AREA_CODE and show the answer."""
    import asyncio
    from dataclasses import replace

    from channels.loudspeaker_config import area_chain, load_endpoints
    from channels.loudspeaker_push import RetryPolicy, ping
    from loa.errors import InvalidInput, NotFound
    from loa.models import Area

    settings = _settings()
    config = load_endpoints(settings.loudspeaker_endpoints_file)
    engine = _open_database(settings)
    with session_scope(engine) as session:
        area = session.get(Area, area_code)
        if area is None:
            raise NotFound(f"area {area_code} is not in the area table (loa areas load)")
        chain = area_chain(area.path)
    endpoint = config.endpoint_for(chain)
    if endpoint is None:
        raise InvalidInput(
            f"no loudspeaker endpoint serves area {area_code} nor any area above it "
            f"({'/'.join(chain)}) in {config.source}"
        )
    policy = replace(RetryPolicy.from_settings(settings), max_attempts=attempts)
    now = system_clock()
    day = now.astimezone(ZoneInfo(settings.default_timezone)).date()
    result = asyncio.run(ping(endpoint, area_code, day=day, policy=policy, clock=system_clock))
    via = "" if endpoint.area_code == area_code else f" (configured for area {endpoint.area_code})"
    click.echo(f"endpoint: {endpoint.url}{via}")
    click.echo(f"request id: {result.request_id}")
    click.echo(f"attempts: {result.attempts}")
    status = "no answer" if result.status_code is None else f"HTTP {result.status_code}"
    click.echo(f"answer: {status}" + (f" {result.answer}" if result.answer else ""))
    if not result.accepted:
        raise click.ClickException(f"{result.outcome.value}: {result.reason}")
    click.echo("accepted")


@loudspeaker.command("push")
@click.option(
    "--area",
    "areas",
    multiple=True,
    help="Push this area's playlist (repeatable; default: every area with an endpoint of its own).",
)
@click.option(
    "--date",
    "day",
    callback=lambda ctx, param, value: _iso_date(ctx, param, value),
    help="Local date, YYYY-MM-DD (default: today and tomorrow in LOA_DEFAULT_TIMEZONE).",
)
def loudspeaker_push(areas: tuple[str, ...], day: date | None) -> None:
    """Push playlists to their controllers now, changed or not; one line per area and day with
    the outcome. Exits non-zero when a push was not accepted."""
    from broadcast.push import describe, push_playlists
    from channels.loudspeaker_config import load_endpoints

    settings = _settings()
    config = load_endpoints(settings.loudspeaker_endpoints_file)
    engine = _open_database(settings)
    results = push_playlists(
        engine,
        config,
        now=system_clock(),
        settings=settings,
        clock=system_clock,
        areas=list(areas) or None,
        days=None if day is None else [day],
        force=True,
    )
    for line in describe(results):
        click.echo(line)
    failed = [r for r in results if r.outcome not in ("accepted", "unchanged")]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(results)} pushes not accepted")


# --- broadcasts: playlists and plays ----------------------------------------------------------


def _iso_date(_ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2026-05-31", param=param) from None


@main.group()
def playlist() -> None:
    """A district's loudspeaker playlist for a day (what culture centres pull)."""


@playlist.command("show")
@click.argument("area_code")
@click.option("--date", "day", required=True, callback=_iso_date, help="Local date, YYYY-MM-DD.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "m3u8", "xspf"]),
    default="json",
    show_default=True,
)
def playlist_show(area_code: str, day: date, fmt: str) -> None:
    """The playlist of the communes under AREA_CODE, with its overflow (JSON); audio URLs start
    with LOA_PUBLIC_URL."""
    from broadcast.formats import to_m3u8, to_xspf
    from broadcast.playlist import district_playlist

    settings = _settings()
    engine = _open_database(settings)
    with session_scope(engine) as session:
        built = district_playlist(
            session, area_code, day, settings=settings, base_url=settings.public_url
        )
    if fmt == "m3u8":
        click.echo(to_m3u8(built), nl=False)
    elif fmt == "xspf":
        click.echo(to_xspf(built).decode())
    else:
        click.echo(built.model_dump_json(indent=2))


@main.group()
def plays() -> None:
    """Plays reported by culture centres (proof of play)."""


@plays.command("export")
@click.option("--district", help="Only the communes under this area code.")
@click.option("--from", "since", callback=_iso_date, help="First date (UTC), YYYY-MM-DD.")
@click.option("--to", "until", callback=_iso_date, help="Last date (UTC, inclusive).")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write to this file instead of standard output.",
)
def plays_export(
    district: str | None, since: date | None, until: date | None, output: Path | None
) -> None:
    """Every reported play as CSV (item, wave, commune, times, result, who reported), in order
    of start."""
    from broadcast.playlist import get_area
    from broadcast.plays import export_plays_csv, utc_bounds

    settings = _settings()
    engine = _open_database(settings)
    path = None
    if district is not None:
        with session_scope(engine) as session:
            path = get_area(session, district).path
    start, end = utc_bounds(since, until)
    chunks = export_plays_csv(engine, area_path=path, since=start, until=end)
    if output is None:
        for chunk in chunks:
            click.echo(chunk, nl=False)
        return
    # Written beside the target and renamed: a failed export leaves no half file.
    partial = output.with_name(output.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="") as handle:
        for chunk in chunks:
            handle.write(chunk)
    partial.replace(output)
    click.echo(f"plays written to {output}", err=True)


# --- campaigns --------------------------------------------------------------------------------


@main.group()
def campaign() -> None:
    """Create, approve, launch, pause, resume, cancel and show campaigns."""


@campaign.command("create")
@click.argument("spec_file", type=click.Path(path_type=Path, dir_okay=False))
def campaign_create(spec_file: Path) -> None:
    """Create a draft campaign from a YAML spec (validated whole; nothing is written on error)."""
    from scheduler.lifecycle import create_campaign
    from scheduler.spec import load_spec

    settings = _settings()
    spec = load_spec(spec_file)
    engine = _open_database(settings)
    with session_scope(engine) as session:
        created = create_campaign(
            session,
            spec=spec,
            actor=_actor(),
            now=system_clock(),
            settings=settings,
            source=str(spec_file),
        )
    click.echo(
        f"created campaign {created.id} ({created.name!r}) as draft with {len(spec.waves)} wave(s)"
    )


@campaign.command("edit")
@click.argument("campaign_id", type=int)
@click.argument("spec_file", type=click.Path(path_type=Path, dir_okay=False))
def campaign_edit(campaign_id: int, spec_file: Path) -> None:
    """Replace a draft campaign's spec (name, waves, templates) with a YAML spec, checked whole."""
    from scheduler.lifecycle import edit_campaign
    from scheduler.spec import load_spec

    settings = _settings()
    spec = load_spec(spec_file)
    engine = _open_database(settings)
    with session_scope(engine) as session:
        edited = edit_campaign(
            session,
            campaign_id,
            spec=spec,
            actor=_actor(),
            now=system_clock(),
            settings=settings,
            source=str(spec_file),
        )
    click.echo(f"campaign {edited.id} ({edited.name!r}) now has {len(spec.waves)} wave(s)")


@campaign.command("approve")
@click.argument("campaign_id", type=int)
def campaign_approve(campaign_id: int) -> None:
    """Approve a draft campaign."""
    from scheduler.lifecycle import approve_campaign

    settings = _settings()
    engine = _open_database(settings)
    with session_scope(engine) as session:
        approved = approve_campaign(
            session, campaign_id, actor=_actor(), now=system_clock(), settings=settings
        )
    click.echo(f"campaign {approved.id} approved")


@campaign.command("launch")
@click.argument("campaign_id", type=int)
def campaign_launch(campaign_id: int) -> None:
    """Schedule an approved campaign's waves; the scheduler fires each at its time."""
    from scheduler.lifecycle import launch_campaign

    settings = _settings()
    engine = _open_database(settings)
    with session_scope(engine) as session:
        launched = launch_campaign(
            session, campaign_id, actor=_actor(), now=system_clock(), settings=settings
        )
    click.echo(f"campaign {launched.id} scheduled; `loa stats {launched.id}` shows progress")


@campaign.command("pause")
@click.argument("campaign_id", type=int)
def campaign_pause(campaign_id: int) -> None:
    """Stop sending a scheduled or running campaign's messages until it is resumed."""
    from scheduler.lifecycle import pause_campaign

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        paused = pause_campaign(session, campaign_id, actor=_actor(), now=system_clock())
    click.echo(f"campaign {paused.id} paused; `loa campaign resume {paused.id}` continues it")


@campaign.command("resume")
@click.argument("campaign_id", type=int)
def campaign_resume(campaign_id: int) -> None:
    """Continue a paused campaign where it stopped (nothing already sent is sent again)."""
    from scheduler.lifecycle import resume_campaign

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        resumed = resume_campaign(session, campaign_id, actor=_actor(), now=system_clock())
    click.echo(f"campaign {resumed.id} resumed; it is {resumed.status} again")


@campaign.command("cancel")
@click.argument("campaign_id", type=int)
def campaign_cancel(campaign_id: int) -> None:
    """Cancel a campaign for good: its messages not yet sent are cancelled. Cannot be undone."""
    from scheduler.lifecycle import cancel_campaign

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        result = cancel_campaign(session, campaign_id, actor=_actor(), now=system_clock())
    click.echo(
        f"campaign {result.campaign.id} cancelled: {result.messages_cancelled} message(s) "
        f"cancelled, {result.waves_closed} wave(s) that had not fired closed"
    )


@campaign.command("show")
@click.argument("campaign_id", type=int)
def campaign_show(campaign_id: int) -> None:
    """A campaign's status and its waves, with fire times in the campaign's time zone."""
    from scheduler.lifecycle import get_campaign, list_waves

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        shown = get_campaign(session, campaign_id)
        waves = list_waves(session, campaign_id)
    zone = ZoneInfo(shown.timezone)
    click.echo(f"campaign {shown.id} {shown.name!r}: {shown.status}, time zone {zone.key}")
    made: dict[int | None, int] = {}
    for wave in waves:
        made[wave.parent_id] = made.get(wave.parent_id, 0) + 1
    rows = [["#", "wave", "channel", "class", "trigger", "status", f"next ({zone.key})", "made"]]
    for wave in waves:
        if wave.parent_id is not None:
            continue
        fires = _local(wave.fire_at, zone) if wave.fire_at is not None else "not scheduled"
        if wave.kind != "once" and wave.status == "done":
            fires = "no occurrence left"
        rows.append(
            [
                str(wave.position + 1),
                wave.name,
                wave.channel,
                wave.message_class,
                wave.kind,
                wave.status,
                fires,
                str(made.get(wave.id, 0)) if wave.kind != "once" else "",
            ]
        )
    _print_table(rows)


def _local(instant: datetime | None, zone: ZoneInfo) -> str:
    return instant.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if instant else "-"


@campaign.command("plan")
@click.argument("campaign_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def campaign_plan(campaign_id: int, as_json: bool) -> None:
    """What each wave would send: recipients, exclusions, segments, cost, first and last send.

    Writes nothing; works on a draft as well as on a running campaign.
    """
    from scheduler.plan import plan_campaign

    settings = _settings()
    engine = _open_database(settings)
    with session_scope(engine) as session:
        plan = plan_campaign(session, campaign_id, now=system_clock(), settings=settings)
    if as_json:
        click.echo(plan.model_dump_json(indent=2))
        return
    zone = ZoneInfo(plan.timezone)
    click.echo(
        f"campaign {plan.campaign_id} {plan.name!r}: {plan.status}, plan at "
        f"{_local(plan.planned_at, zone)} ({zone.key})"
    )
    rows = [
        [
            "wave",
            "trigger",
            "times",
            "targeted",
            "left out",
            "capped",
            "to send",
            "segments",
            f"cost ({plan.currency})",
            "first send",
            "last send",
        ]
    ]
    for wave in plan.waves:
        left_out = (
            ", ".join(
                f"{n} {reason.replace('_', ' ')}"
                for reason, n in wave.excluded.model_dump().items()
                if n
            )
            or "0"
        )
        segments = wave.segments
        rows.append(
            [
                f"{wave.wave_id} {wave.name}",
                wave.kind,
                str(wave.occurrences),
                str(wave.targeted),
                left_out,
                str(wave.capped),
                str(wave.to_send),
                f"{segments.total} ({segments.per_message_mean:g}/msg {segments.encoding})"
                if segments
                else "-",
                f"{wave.cost:,.0f}" if wave.cost is not None else "-",
                _local(wave.first_send_at, zone),
                _local(wave.last_send_at, zone),
            ]
        )
    _print_table(rows)
    for wave in plan.waves:
        if len(wave.cost_by_carrier) > 1 or any(c.cost is not None for c in wave.cost_by_carrier):
            click.echo(
                f"wave {wave.wave_id} by carrier: "
                + "; ".join(
                    f"{c.carrier} {c.messages} msg, {c.segments} seg"
                    + (f" x {c.price_per_segment:g} = {c.cost:,.0f}" if c.cost is not None else "")
                    for c in wave.cost_by_carrier
                )
            )
    cost = f"{plan.cost:,.0f} {plan.currency}" if plan.cost is not None else "not estimated"
    click.echo(f"in all: {plan.to_send} messages, {plan.segments} segments, cost {cost}")
    for wave in plan.waves:
        for note in wave.notes:
            click.echo(f"wave {wave.wave_id}: {note}", err=True)
        for refusal in wave.refusals:
            click.echo(f"wave {wave.wave_id} REFUSED: {refusal}", err=True)
    if plan.refused:
        click.echo(
            "the campaign cannot be approved or launched until every refusal above is fixed",
            err=True,
        )


# --- API keys ---------------------------------------------------------------------------------


@main.group()
def apikey() -> None:
    """API keys: who may call the HTTP API, and in which role."""


@apikey.command("create")
@click.option("--role", required=True, help=f"One of {', '.join(Role)}.")
@click.option("--area", default=None, help="Area code a district key serves (district keys only).")
@click.option("--name", default=None, help="Who or what uses the key (default: the role).")
@click.option("--expires-days", type=int, default=None, help="Refuse the key after N days.")
def apikey_create(role: str, area: str | None, name: str | None, expires_days: int | None) -> None:
    """Create an API key and print it. It is shown only this once: Loa keeps only a hash."""
    from loa.apikeys import create_key

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        created = create_key(
            session,
            role=role,
            actor=_actor(),
            now=system_clock(),
            name=name,
            area_code=area,
            expires_in=timedelta(days=expires_days) if expires_days is not None else None,
        )
    row = created.api_key
    # The key alone on stdout, so that KEY=$(loa apikey create ...) captures it.
    click.echo(created.key)
    click.echo(
        f"created {row.role} key {row.prefix} ({row.name!r}"
        + (f", area {row.area_code}" if row.area_code else "")
        + (f", expires {row.expires_at:%Y-%m-%d %H:%M} UTC" if row.expires_at else "")
        + "). Store the key now: it is not shown again.",
        err=True,
    )


@apikey.command("list")
@_limit_option
@_after_option
def apikey_list(limit: int, after: str | None) -> None:
    """API keys with their role, area and dates (never the secret), a page at a time."""
    from loa.apikeys import list_keys

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        keys, next_after = list_keys(session, after=after, limit=limit)
    if not keys and after is None:
        click.echo("no API keys yet; create one with: loa apikey create --role ROLE")
        return

    def when(value: datetime | None) -> str:
        return f"{value:%Y-%m-%d %H:%M}" if value is not None else "-"

    rows = [["prefix", "name", "role", "area", "created", "expires", "revoked", "last used"]]
    for key in keys:
        rows.append(
            [
                key.prefix,
                key.name,
                key.role,
                key.area_code or "-",
                when(key.created_at),
                when(key.expires_at),
                when(key.revoked_at),
                when(key.last_used_at),
            ]
        )
    if keys:
        _print_table(rows)
        click.echo("(times in UTC)")
    _echo_page_end(len(keys), next_after)


@apikey.command("revoke")
@click.argument("prefix")
def apikey_revoke(prefix: str) -> None:
    """Refuse an API key from now on (PREFIX as shown by `loa apikey list`)."""
    from loa.apikeys import revoke_key

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        revoked = revoke_key(session, prefix, actor=_actor(), now=system_clock())
    click.echo(f"API key {revoked.prefix} ({revoked.name!r}, {revoked.role}) revoked")


@main.command("audit")
@click.option("--entity", default=None, help="campaign, segment, suppression, api_key, ...")
@click.option("--entity-id", default=None)
@click.option("--actor", default=None, help="key:<prefix>, cli:<user>, channel:twilio, ...")
@click.option("--since", type=click.DateTime(), default=None, help="At or after (local time).")
@click.option("--until", type=click.DateTime(), default=None, help="Before (local time).")
@_limit_option
@_after_option
def audit(
    entity: str | None,
    entity_id: str | None,
    actor: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    after: str | None,
) -> None:
    """The audit log, newest first: who changed what, when (the office's local time), before
    and after."""
    from loa.audit import AuditFilter, list_entries

    settings = _settings()
    zone = ZoneInfo(settings.default_timezone)
    flt = AuditFilter(
        entity=entity,
        entity_id=entity_id,
        actor=actor,
        # Times typed at a terminal are the office's local time.
        since=since.replace(tzinfo=zone) if since else None,
        until=until.replace(tzinfo=zone) if until else None,
    )
    engine = _open_database(settings)
    with session_scope(engine) as session:
        rows, next_after = list_entries(session, flt, after=after, limit=limit)
    for row in rows:
        click.echo(
            f"{row.at.astimezone(zone):%Y-%m-%d %H:%M:%S} {row.actor} {row.action} "
            f"{row.entity} {row.entity_id}"
        )
        for label, state in (("before", row.before), ("after", row.after)):
            if state is not None:
                click.echo(f"    {label}: {json.dumps(state, ensure_ascii=False, default=str)}")
    if not rows and after is None:
        click.echo("no audit entries match")
    _echo_page_end(len(rows), next_after)


# --- statistics -------------------------------------------------------------------------------


@main.command()
@click.argument("campaign_id", type=int, required=False)
@click.option(
    "--group-by",
    default=None,
    help="Comma-separated: campaign, wave, channel, province, district, commune, day, carrier, "
    "error_code, adapter. Without it (and with a CAMPAIGN_ID): the campaign's waves by status.",
)
@click.option("--campaign", "campaign_filter", type=int, default=None, help="Only this campaign.")
@click.option("--wave", "wave_id", type=int, default=None, help="Only this wave (and occurrences).")
@click.option("--channel", default=None)
@click.option("--area", default=None, help="A province, district or commune code.")
@click.option("--from", "day_from", callback=_iso_date, help="First local day, YYYY-MM-DD.")
@click.option("--to", "day_to", callback=_iso_date, help="Last local day (included).")
@click.option(
    "--timezone", default=None, help="Days are local to it (default: LOA_DEFAULT_TIMEZONE)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def stats(
    campaign_id: int | None,
    group_by: str | None,
    campaign_filter: int | None,
    wave_id: int | None,
    channel: str | None,
    area: str | None,
    day_from: date | None,
    day_to: date | None,
    timezone: str | None,
    as_json: bool,
) -> None:
    """Delivery statistics: `loa stats 3` shows campaign 3's waves by status; with --group-by or
    a filter (or no campaign) the same figures as GET /api/v1/stats, grouped and filtered."""
    options = (group_by, campaign_filter, wave_id, channel, area, day_from, day_to, timezone)
    if campaign_id is not None and all(option is None for option in options):
        _campaign_stats(campaign_id, as_json)
        return
    from stats.rollup import MEASURES, key_columns, query_stats

    settings = _settings()
    groups = [g.strip() for g in (group_by or "").split(",") if g.strip()]
    engine = _open_database(settings)
    with session_scope(engine) as session:
        rows = query_stats(
            session,
            group_by=groups,
            campaign_id=campaign_filter if campaign_filter is not None else campaign_id,
            wave_id=wave_id,
            channel=channel,
            area_code=area,
            day_from=day_from,
            day_to=day_to,
            timezone=timezone or settings.default_timezone,
            prices=settings,
        )
    if as_json:
        click.echo(json.dumps([row.model_dump() for row in rows], ensure_ascii=False, indent=2))
        return
    if not rows:
        click.echo("no messages or plays match")
        return
    columns = key_columns(groups)
    table = [[*columns, *(m.replace("delivery_rate", "rate") for m in MEASURES)]]
    for row in rows:
        table.append(
            [_cell(row.key.get(c)) for c in columns] + [_cell(getattr(row, m)) for m in MEASURES]
        )
    _print_table(table, right_from=len(columns))


def _cell(value: object) -> str:
    """A table cell: '-' for none, rates as fractions, money with thousands separators."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value < 1 else f"{value:,.2f}"
    return str(value)


def _campaign_stats(campaign_id: int, as_json: bool) -> None:
    """One campaign's messages by status, per wave of its spec."""
    from stats.campaign import campaign_stats

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        result = campaign_stats(session, campaign_id)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    click.echo(
        f"campaign {result.campaign_id} {result.name!r}: {result.status}, {result.total} messages"
    )
    shown = [s for s, n in result.by_status.items() if n] or ["planned"]
    rows = [["wave", "state", *shown, "total"]]
    for wave in result.waves:
        rows.append(
            [
                f"{wave.wave_id} {wave.name}",
                wave.status,
                *(str(wave.by_status[s]) for s in shown),
                str(wave.total),
            ]
        )
    rows.append(["all waves", "", *(str(result.by_status[s]) for s in shown), str(result.total)])
    _print_table(rows, right_from=2)


@main.group()
def deliveries() -> None:
    """The delivery log: each message with its current status."""


@deliveries.command("export")
@click.option("--campaign", "campaign_id", type=int, default=None)
@click.option("--wave", "wave_id", type=int, default=None)
@click.option("--channel", default=None)
@click.option("--status", default=None, help="planned, sent, delivered, failed, ...")
@click.option("--error-code", default=None)
@click.option("--area", default=None, help="An area code; its sub-areas too.")
@click.option(
    "--since", type=click.DateTime(), default=None, help="Last change at or after (local time)."
)
@click.option("--until", type=click.DateTime(), default=None, help="Last change before.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the CSV here (default: standard output).",
)
def deliveries_export(
    campaign_id: int | None,
    wave_id: int | None,
    channel: str | None,
    status: str | None,
    error_code: str | None,
    area: str | None,
    since: datetime | None,
    until: datetime | None,
    out: Path | None,
) -> None:
    """The filtered log as CSV, written a batch at a time (any size, constant memory)."""
    from stats.deliveries import DeliveryFilter, export_deliveries

    settings = _settings()
    zone = ZoneInfo(settings.default_timezone)
    flt = DeliveryFilter(
        campaign_id=campaign_id,
        wave_id=wave_id,
        channel=channel,
        status=status,
        error_code=error_code,
        area=area,
        # Times typed at a terminal are the office's local time.
        since=since.replace(tzinfo=zone) if since else None,
        until=until.replace(tzinfo=zone) if until else None,
    )
    lines = export_deliveries(_open_database(settings), flt)
    if out is None:
        for text in lines:
            click.echo(text, nl=False)
        return
    # Written beside the target and renamed at the end: an export cut short leaves no half file.
    partial = out.with_name(out.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="") as handle:
        for text in lines:
            handle.write(text)
    partial.replace(out)
    click.echo(f"deliveries written to {out}")


# --- SMS text ---------------------------------------------------------------------------------


@main.group()
def sms() -> None:
    """SMS text: encoding and segments."""


@sms.command("count")
@click.argument("text")
@click.option("--unaccent", is_flag=True, help="Count the text with its diacritics stripped.")
def sms_count(text: str, unaccent: bool) -> None:
    """Print the encoding (GSM-7 or UCS-2), segments and characters TEXT costs as one SMS."""
    from templates.encoding import count_sms
    from templates.encoding import unaccent as strip_diacritics

    counted = count_sms(strip_diacritics(text) if unaccent else text)
    click.echo(
        json.dumps(
            {
                "encoding": counted.encoding,
                "segments": counted.segments,
                "characters": counted.characters,
            }
        )
    )


# --- segments ---------------------------------------------------------------------------------


@main.group()
def segments() -> None:
    """Saved segments: filters over areas, tags and attributes that waves name."""


def _read_filter(filter_file: Path | None, filter_json: str | None) -> tuple[Any, str]:
    """The filter given as a file or as text, parsed as JSON, with where it came from."""
    if (filter_file is None) == (filter_json is None):
        raise click.UsageError("give the filter with exactly one of --filter FILE or --filter-json")
    if filter_file is not None:
        source = str(filter_file)
        try:
            text = filter_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise click.ClickException(f"{source}: no such file") from None
        except UnicodeDecodeError:
            raise click.ClickException(f"{source}: not a UTF-8 text file") from None
    else:
        source, text = "--filter-json", filter_json or ""
    try:
        return json.loads(text), source
    except json.JSONDecodeError as exc:
        raise click.ClickException(
            f"{source}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None


_filter_options = [
    click.option(
        "--filter",
        "filter_file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="A JSON file with the filter.",
    ),
    click.option("--filter-json", help="The filter as JSON text."),
]


def _with_filter_options(command: F) -> F:
    for option in reversed(_filter_options):
        command = option(command)
    return command


@segments.command("create")
@click.argument("name")
@_with_filter_options
@click.option("--description", default=None, help="What the segment is for, in words.")
def segments_create(
    name: str, filter_file: Path | None, filter_json: str | None, description: str | None
) -> None:
    """Save a segment NAME (validated first: nothing is written on error)."""
    from audience.segments import create_segment

    raw, source = _read_filter(filter_file, filter_json)
    engine = _open_database(_settings())
    with session_scope(engine) as session:
        segment = create_segment(
            session,
            name=name,
            raw_filter=raw,
            description=description,
            actor=_actor(),
            now=system_clock(),
            source=source,
        )
        click.echo(f"created segment {segment.name!r}: {json.dumps(segment.filter)}")


@segments.command("update")
@click.argument("name")
@_with_filter_options
@click.option("--description", default=None, help="Replace the description too.")
def segments_update(
    name: str, filter_file: Path | None, filter_json: str | None, description: str | None
) -> None:
    """Replace the filter of segment NAME; waves not yet expanded follow the new filter."""
    from audience.segments import update_segment

    raw, source = _read_filter(filter_file, filter_json)
    engine = _open_database(_settings())
    with session_scope(engine) as session:
        segment = update_segment(
            session,
            name,
            raw_filter=raw,
            description=description,
            actor=_actor(),
            now=system_clock(),
            source=source,
        )
        click.echo(f"updated segment {segment.name!r}: {json.dumps(segment.filter)}")


@segments.command("list")
@_limit_option
@_after_option
def segments_list(limit: int, after: str | None) -> None:
    """Saved segments by name, with their description and filter, a page at a time."""
    from audience.segments import list_segments

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        rows = [["name", "description", "updated (UTC)", "filter"]]
        page, next_after = list_segments(session, after=after, limit=limit)
        for segment in page:
            rows.append(
                [
                    segment.name,
                    segment.description or "-",
                    f"{segment.updated_at:%Y-%m-%d %H:%M}",
                    json.dumps(segment.filter, ensure_ascii=False),
                ]
            )
    if len(rows) == 1 and after is None:
        click.echo("no segments yet; create one with: loa segments create NAME --filter FILE.json")
        return
    if len(rows) > 1:
        _print_table(rows)
    _echo_page_end(len(page), next_after)


@segments.command("show")
@click.argument("name")
def segments_show(name: str) -> None:
    """One segment as JSON, with the waves not yet expanded that use it."""
    from audience.segments import get_segment, waves_using

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        segment = get_segment(session, name)
        shown = {
            "name": segment.name,
            "description": segment.description,
            "filter": segment.filter,
            "created_by": segment.created_by,
            "created_at": segment.created_at.isoformat(),
            "updated_at": segment.updated_at.isoformat(),
            "waves_not_yet_expanded": [
                {"campaign_id": c, "wave_id": w, "wave": n}
                for c, w, n in waves_using(session, name)
            ],
        }
    click.echo(json.dumps(shown, ensure_ascii=False, indent=2))


@segments.command("count")
@click.argument("name", required=False)
@_with_filter_options
@click.option(
    "--sample",
    type=click.IntRange(0, 1000),
    default=10,
    show_default=True,
    help="How many matching recipients to list (phones partly masked).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def segments_count(
    name: str | None,
    filter_file: Path | None,
    filter_json: str | None,
    sample: int,
    as_json: bool,
) -> None:
    """How many recipients segment NAME (or a filter given here) selects today, with a sample."""
    from audience.segments import (
        check_against_data,
        count_filter,
        count_segment,
        local_today,
        parse_filter,
    )

    if name is not None and (filter_file is not None or filter_json is not None):
        raise click.UsageError("give a segment NAME or a filter, not both")
    settings = _settings()
    raw, source = (None, "") if name is not None else _read_filter(filter_file, filter_json)
    today = local_today(system_clock(), settings.default_timezone)
    engine = _open_database(settings)
    with session_scope(engine) as session:
        if name is not None:
            counted = count_segment(session, name, today=today, sample=sample)
        else:
            flt = parse_filter(raw, source=source)
            check_against_data(session, flt, source=source)
            counted = count_filter(session, flt, today=today, sample=sample)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "count": counted.count,
                    "as_of": counted.as_of.isoformat(),
                    "sample": [vars(r) for r in counted.sample],
                },
                ensure_ascii=False,
            )
        )
        return
    what = f"segment {name!r}" if name else "the filter"
    click.echo(
        f"{counted.count} recipient(s) in {what} "
        f"as of {counted.as_of} ({settings.default_timezone})"
    )
    if counted.sample:
        rows = [["id", "phone", "name", "area"]]
        rows += [[str(r.id), r.phone, r.name or "-", r.area_code or "-"] for r in counted.sample]
        _print_table(rows)


@segments.command("delete")
@click.argument("name")
def segments_delete(name: str) -> None:
    """Delete segment NAME (refused while a wave not yet expanded uses it)."""
    from audience.segments import delete_segment

    engine = _open_database(_settings())
    with session_scope(engine) as session:
        delete_segment(session, name, actor=_actor(), now=system_clock())
    click.echo(f"deleted segment {name!r}")


# --- demo -------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEMO_DIR,
    show_default=True,
    help="Folder with the demo files.",
)
@click.option(
    "--in-minutes",
    type=int,
    default=1,
    show_default=True,
    help="Minutes from now until the demo campaign's first wave fires.",
)
def demo(directory: Path, in_minutes: int) -> None:
    """Load demo areas and recipients of Hà Tĩnh, and launch a demo SMS campaign."""
    from audience.areas import import_areas
    from audience.importer import import_recipients
    from scheduler.lifecycle import approve_campaign, create_campaign, launch_campaign
    from scheduler.policy import window_for
    from scheduler.spec import validate_spec
    from scheduler.windows import is_open, next_open

    settings = _settings()
    engine = _open_database(settings)
    spec_file = directory / "campaign.yaml"
    raw = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    zone = ZoneInfo(raw.get("timezone") or settings.default_timezone)
    now = system_clock()
    # The spec's own times are examples; the demo fires a minute from now, one wave after another.
    for index, wave in enumerate(raw["waves"]):
        wave["at"] = (
            (now + timedelta(minutes=in_minutes + index))
            .astimezone(zone)
            .strftime("%Y-%m-%d %H:%M")
        )
    spec = validate_spec(raw, source=str(spec_file))
    actor = _actor()
    with session_scope(engine) as session:
        import_areas(session, directory / "areas.csv")
        imported = import_recipients(session, directory / "recipients.csv", now=now)
        created = create_campaign(
            session, spec=spec, actor=actor, now=now, settings=settings, source=str(spec_file)
        )
        assert created.id is not None
        approve_campaign(session, created.id, actor=actor, now=now, settings=settings)
        launch_campaign(session, created.id, actor=actor, now=now, settings=settings)
    first = spec.waves[0].at
    click.echo(
        f"demo loaded: {imported.inserted + imported.updated} recipients "
        f"({len(imported.rejected)} demo rows rejected on purpose), campaign {created.id} "
        f"launched; its first wave fires at {first} ({zone.key})"
    )
    first_class = spec.waves[0].message_class
    window = window_for(first_class, settings)
    if not is_open(now + timedelta(minutes=in_minutes), window, zone):
        click.echo(
            f"note: {first_class} messages are sent only within {window} local time "
            f"(LOA_WINDOW_{first_class.upper()}); this wave waits until "
            f"{next_open(now, window, zone).astimezone(zone):%Y-%m-%d %H:%M}"
        )
    click.echo(json.dumps({"campaign_id": created.id}))


# --- campaign content: preview and test send ---------------------------------------------------


@campaign.command("preview")
@click.argument("campaign_id", type=int)
@click.option("--wave", "wave_id", type=int, default=None, help="Only this wave (its id).")
@click.option("--sample", type=int, default=5, show_default=True, help="Recipients per wave.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def campaign_preview(campaign_id: int, wave_id: int | None, sample: int, as_json: bool) -> None:
    """Each SMS wave's text for a few of its recipients, with segments and cost. Writes nothing."""
    from scheduler.preview import preview_campaign, preview_wave

    settings = _settings()
    engine = _open_database(settings)
    now = system_clock()
    with session_scope(engine) as session:
        previews = (
            [preview_wave(session, campaign_id, wave_id, sample=sample, now=now, settings=settings)]
            if wave_id is not None
            else preview_campaign(session, campaign_id, sample=sample, now=now, settings=settings)
        )
    if as_json:
        click.echo(json.dumps([p.model_dump(mode="json") for p in previews], indent=2))
        return
    for preview in previews:
        sender = preview.brandname or "no brandname"
        click.echo(
            f"wave {preview.wave_id} {preview.name!r} ({preview.message_class}, {sender}"
            + (", unaccented" if preview.unaccent else "")
            + f"): {len(preview.messages)} sample recipient(s)"
        )
        for m in preview.messages:
            who = f"{m.recipient.phone} (id {m.recipient.id})" if m.recipient else "-"
            if m.text is None:
                click.echo(f"  {who}: template fails: {m.error}")
                continue
            cost = f", {m.cost:,.0f} {preview.currency}" if m.cost is not None else ""
            click.echo(
                f"  {who}, {m.carrier or 'carrier unknown'}: {m.encoding}, {m.segments} "
                f"segment(s), {m.characters} characters{cost}"
            )
            click.echo(f"    {m.text}")
        for refusal in preview.refusals:
            click.echo(f"wave {preview.wave_id} REFUSED: {refusal}", err=True)


def _variables(pairs: tuple[str, ...]) -> dict[str, str] | None:
    if not pairs:
        return None
    variables = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--var")
        variables[name.strip()] = value
    return variables


@campaign.command("test-send")
@click.argument("campaign_id", type=int)
@click.option("--wave", "wave_id", type=int, required=True, help="The wave (its id).")
@click.option("--to", "to", required=True, help="Test numbers, comma-separated (0912...,0987...).")
@click.option(
    "--var",
    "pairs",
    multiple=True,
    help="A template variable, NAME=VALUE (repeatable); without any, the data of the wave's "
    "first recipient fill the template.",
)
def campaign_test_send(campaign_id: int, wave_id: int, to: str, pairs: tuple[str, ...]) -> None:
    """Send a wave's text to test numbers through the SMS channel. The wave's audience and
    outbox are not touched; the send is in the audit log."""
    from channels.registry import channel_for
    from scheduler.preview import send_test

    settings = _settings()
    engine = _open_database(settings)
    sent = send_test(
        engine,
        campaign_id,
        wave_id,
        to=[n for n in to.split(",") if n.strip()],
        variables=_variables(pairs),
        actor=_actor(),
        now=system_clock(),
        settings=settings,
        channel_for=lambda name: channel_for(name, settings),
    )
    source = (
        f"the data of recipient {sent.rendered_for.id} ({sent.rendered_for.phone})"
        if sent.rendered_for
        else "the given variables"
    )
    click.echo(
        f"wave {sent.wave_id}: {sent.encoding}, {sent.segments} segment(s), "
        f"{sent.characters} characters, rendered with {source}:"
    )
    click.echo(f"  {sent.text}")
    for result in sent.results:
        extra = result.provider_id or result.error_code or result.detail or ""
        click.echo(f"  {result.to}: {result.outcome} {extra}".rstrip())
    for refusal in sent.refusals:
        click.echo(f"wave {sent.wave_id} would be REFUSED for its audience: {refusal}", err=True)
    if any(r.outcome != "accepted" for r in sent.results):
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
