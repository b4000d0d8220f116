"""The suppression list: numbers that must not receive any message, with the reason.

Checked when a wave expands (the row is written as suppressed), again when a worker claims the
message (an opt-out mid-wave stops the rest), and counted by reason in the plan.

Rules that keep an opted-out person out:
- Nothing removes a suppression but `remove_suppression`, one number at a time, with an audit
  entry. Imports (of recipients, of suppression lists, of consents) only ever add or update.
- An `opt_out` is the person's own refusal. It is never replaced by another reason (an import or
  an `add` that says "manual" for that number leaves it as it is), and removing it needs the
  explicit `opt_out_withdrawn` flag: the person asked to receive messages again (an opt-in
  keyword sent by SMS from that number says so itself). Other reasons (do_not_contact, invalid,
  manual) are removed without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from sqlalchemy import delete, func, select
from sqlmodel import Session, SQLModel, col

from audience.consent import ConsentSource, add_consent
from audience.csvfile import header_key
from audience.keywords import Classified, InboundKind, classify_inbound, parse_keywords
from audience.phonelist import (
    NOTE_HEADERS,
    NOTE_MAX,
    BadCell,
    ListImportReport,
    ListRow,
    audit_list_import,
    note_of,
    read_phone_list,
    write_in_chunks,
)
from audience.phones import normalize_phone
from loa import audit
from loa.db import upsert_insert
from loa.errors import Conflict, InvalidInput, NotFound
from loa.models import Consent, OutboxMessage, Recipient, Suppression
from loa.paging import DEFAULT_PAGE, Key, keyset_page

SUPPRESSION: Final = SQLModel.metadata.tables[Suppression.__tablename__]
REASON_HEADERS: Final = frozenset({"reason", "ly_do"})


class SuppressionReason(StrEnum):
    OPT_OUT = "opt_out"  # the person refused (an opt-out keyword by SMS, or told the office)
    DO_NOT_CONTACT = "do_not_contact"  # on a do-not-contact list (e.g. the carriers' register)
    INVALID = "invalid"  # the number does not work (reported by the provider or the office)
    MANUAL = "manual"  # set aside by hand, for any other reason (say which in the note)


REASONS: Final = tuple(r.value for r in SuppressionReason)


@dataclass
class SuppressionImportReport(ListImportReport):
    # Rows of numbers that had opted out, which the file gave another reason: they stay opt_out.
    kept_opt_out: int = 0


@dataclass(frozen=True)
class InboundResult:
    phone: str  # the sender, E.164
    kind: InboundKind
    keyword: str | None
    # The number is on the list after this message: as opt_out after an opt-out; for another
    # reason after an opt-in (which lifts only an opt-out).
    suppressed: bool
    consent_withdrawn: bool  # a recorded consent to advertising was deleted
    consented: bool = False  # an opt-in: consent to advertising recorded
    opt_out_lifted: bool = False  # an opt-in lifted the number's earlier opt-out


def parse_reason(value: str) -> SuppressionReason:
    """A reason as people write it: "opt_out", "Opt-out", "do not contact"."""
    key = header_key(value)
    try:
        return SuppressionReason(key)
    except ValueError:
        raise InvalidInput(
            f"unknown suppression reason {value!r}; use one of {', '.join(REASONS)}",
            field="reason",
        ) from None


def _as_dict(row: Suppression) -> dict[str, Any]:
    return {"reason": row.reason, "note": row.note, "created_at": row.created_at.isoformat()}


def add_suppression(
    session: Session,
    phone: str,
    *,
    reason: str,
    note: str | None,
    actor: str,
    now: datetime,
) -> Suppression:
    """Put a number on the list (or change the reason and note of one already there, except that
    an opt_out stays opt_out). Raises InvalidInput for a number or reason that is not valid."""
    e164 = normalize_phone(phone).e164
    chosen = parse_reason(reason)
    if note is not None and len(note) > NOTE_MAX:
        raise InvalidInput(f"note is longer than {NOTE_MAX} characters", field="note")
    row = session.get(Suppression, e164)
    before = _as_dict(row) if row is not None else None
    if row is None:
        row = Suppression(phone=e164, reason=chosen, note=note, created_at=now)
        session.add(row)
    elif row.reason != SuppressionReason.OPT_OUT:
        row.reason, row.note = chosen, note if note is not None else row.note
    elif chosen == SuppressionReason.OPT_OUT and note is not None:
        row.note = note
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="suppression.add",
        entity="suppression",
        entity_id=e164,
        now=now,
        before=before,
        after=_as_dict(row),
    )
    return row


def remove_suppression(
    session: Session,
    phone: str,
    *,
    actor: str,
    now: datetime,
    opt_out_withdrawn: bool = False,
    note: str | None = None,
) -> Suppression:
    """Take a number off the list. An opt_out needs `opt_out_withdrawn` (the person asked to
    receive messages again): without it, Conflict."""
    e164 = normalize_phone(phone).e164
    row = session.get(Suppression, e164)
    if row is None:
        raise NotFound(f"{e164} is not on the suppression list", field="phone")
    if row.reason == SuppressionReason.OPT_OUT and not opt_out_withdrawn:
        raise Conflict(
            f"{e164} opted out on {row.created_at:%Y-%m-%d %H:%M} UTC; remove it only if the "
            "person asked to receive messages again, and say so (CLI --opt-out-withdrawn, API "
            "opt_out_withdrawn=true)",
            field="phone",
        )
    before = _as_dict(row)
    session.execute(delete(Suppression).where(col(Suppression.phone) == e164))
    audit.record(
        session,
        actor=actor,
        action="suppression.remove",
        entity="suppression",
        entity_id=e164,
        now=now,
        before=before,
        after={"note": note} if note else None,
    )
    return row


# Newest first: an index on (created_at, phone) scanned backwards (migration 0014).
SUPPRESSION_ORDER: Final = (
    Key(col(Suppression.created_at), descending=True),
    Key(col(Suppression.phone), descending=True),
)


def list_suppressions(
    session: Session,
    *,
    reason: str | None = None,
    after: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> tuple[list[Suppression], str | None]:
    """One keyset page of the list, newest first (optionally of one reason), and the cursor of
    the next page. No total: counting a do-not-contact list of millions on every page would cost
    more than the page."""
    statement = select(Suppression)
    if reason:
        statement = statement.where(col(Suppression.reason) == parse_reason(reason))
    return keyset_page(session, statement, SUPPRESSION_ORDER, after=after, limit=limit)


def import_suppressions(
    session: Session,
    path: Path,
    *,
    now: datetime,
    actor: str,
    default_reason: str = SuppressionReason.DO_NOT_CONTACT,
    dry_run: bool = False,
    source: str | None = None,
) -> SuppressionImportReport:
    """Add the numbers of a CSV file to the list: a phone column, and optional `reason` (else
    `default_reason`) and `note` columns. Bad rows are reported and skipped; numbers already on
    the list get the file's reason and note, except an opt_out, which stays. Nothing is ever
    removed. One audit entry for the whole import (naming `source`, else the file)."""
    fallback = parse_reason(default_reason)
    report = SuppressionImportReport()
    roles = {"reason": REASON_HEADERS, "note": NOTE_HEADERS}
    write_in_chunks(
        read_phone_list(path, roles, report),
        lambda row: _suppression_values(row, fallback, now),
        lambda pending: _flush(session, pending, report, dry_run),
        report,
    )
    if not dry_run:
        audit_list_import(
            session,
            report,
            entity="suppression",
            path=path,
            source=source,
            actor=actor,
            now=now,
            counts={"kept_opt_out": report.kept_opt_out},
        )
    return report


def _suppression_values(row: ListRow, fallback: SuppressionReason, now: datetime) -> dict[str, Any]:
    raw_reason = row.cells.get("reason", "")
    reason = fallback
    if raw_reason:
        try:
            reason = parse_reason(raw_reason)
        except InvalidInput as exc:
            raise BadCell(row.headers["reason"], raw_reason, exc.message) from None
    return {"phone": row.phone, "reason": reason.value, "note": note_of(row), "created_at": now}


def _flush(
    session: Session,
    pending: dict[str, dict[str, Any]],
    report: SuppressionImportReport,
    dry_run: bool,
) -> None:
    if not pending:
        return
    # Asked first so that a dry run tells what an import would do. A number repeated in two
    # chunks counts as updated the second time, as it would be.
    existing = dict(
        session.execute(
            select(SUPPRESSION.c.phone, SUPPRESSION.c.reason).where(
                SUPPRESSION.c.phone.in_(list(pending))
            )
        ).all()
    )
    for phone, values in pending.items():
        before = existing.get(phone)
        if before is None:
            report.added += 1
            continue
        report.updated += 1
        if before == SuppressionReason.OPT_OUT and values["reason"] != SuppressionReason.OPT_OUT:
            report.kept_opt_out += 1
    if dry_run:
        return
    insert = upsert_insert(session.connection(), SUPPRESSION)
    current, new = SUPPRESSION.c, insert.excluded
    session.execute(
        insert.on_conflict_do_update(
            index_elements=[current.phone],
            set_={"reason": new.reason, "note": func.coalesce(new.note, current.note)},
            # An opt-out is never overwritten (nor its date): see the module's docstring.
            where=current.reason != SuppressionReason.OPT_OUT.value,
        ),
        list(pending.values()),
    )


def apply_inbound(
    session: Session,
    from_phone: str,
    body: str,
    *,
    now: datetime,
    keywords: str,
    opt_in_keywords: str,
    actor: str,
) -> InboundResult:
    """Act on an SMS received from `from_phone` (`keywords` and `opt_in_keywords` are the settings
    LOA_OPT_OUT_KEYWORDS and LOA_OPT_IN_KEYWORDS; see audience/keywords.py for the matching rule).

    - An opt-out keyword suppresses the number (reason opt_out) and withdraws any consent to
      advertising it gave, with an audit entry that does not depend on any message having been
      sent to it.
    - An opt-in keyword records the number's consent (source `keyword`) and lifts an opt-out the
      same number sent earlier: both are the person's own word, by SMS from that number, and the
      later one stands (as STOP and START do with carriers). Any other reason it is suppressed for
      (the do-not-contact list, invalid, manual) stays: those were not the person's choice to
      take back.
    - Anything else, including a body that only mentions a keyword, changes nothing.
    """
    e164 = normalize_phone(from_phone).e164
    classified = classify_inbound(
        body, parse_keywords(keywords), parse_keywords(opt_in_keywords, "opt_in_keywords")
    )
    if classified.kind == InboundKind.OPT_OUT:
        consent_withdrawn = _opt_out(session, e164, body, classified, actor=actor, now=now)
        return InboundResult(e164, classified.kind, classified.keyword, True, consent_withdrawn)
    if classified.kind == InboundKind.OPT_IN:
        return _opt_in(session, e164, body, classified, actor=actor, now=now)
    return InboundResult(e164, classified.kind, classified.keyword, False, False)


def _sms_note(body: str) -> str:
    return f"SMS {body.strip()[: NOTE_MAX - 6]!r}"[:NOTE_MAX]


def _opt_out(
    session: Session, e164: str, body: str, classified: Classified, *, actor: str, now: datetime
) -> bool:
    """Suppress as opt_out and withdraw consent; True when a consent was withdrawn."""
    row = session.get(Suppression, e164)
    before = _as_dict(row) if row is not None else None
    note = _sms_note(body)
    if row is None:
        row = Suppression(phone=e164, reason=SuppressionReason.OPT_OUT, note=note, created_at=now)
        session.add(row)
    elif row.reason != SuppressionReason.OPT_OUT:
        # A stronger reason than any other: it takes the opt-out's protection from removal, and
        # its date is the refusal's.
        row.reason, row.note, row.created_at = SuppressionReason.OPT_OUT, note, now
    consent = session.get(Consent, e164)
    withdrawn = None
    if consent is not None:
        withdrawn = {"source": consent.source, "given_at": consent.given_at.isoformat()}
        session.delete(consent)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="suppression.opt_out",
        entity="suppression",
        entity_id=e164,
        now=now,
        before=before,
        after={
            **_as_dict(row),
            "body": body[:NOTE_MAX],
            "keyword": classified.keyword,
            "consent_withdrawn": withdrawn,
        },
    )
    return consent is not None


def _opt_in(
    session: Session, e164: str, body: str, classified: Classified, *, actor: str, now: datetime
) -> InboundResult:
    add_consent(
        session, e164, actor=actor, now=now, note=_sms_note(body), source=ConsentSource.KEYWORD
    )
    row = session.get(Suppression, e164)
    lifted = row is not None and row.reason == SuppressionReason.OPT_OUT
    if lifted:
        remove_suppression(
            session, e164, actor=actor, now=now, opt_out_withdrawn=True, note=_sms_note(body)
        )
    return InboundResult(
        e164,
        classified.kind,
        classified.keyword,
        suppressed=row is not None and not lifted,
        consent_withdrawn=False,
        consented=True,
        opt_out_lifted=lifted,
    )


def suppress_reported(
    session: Session,
    reasons: Mapping[int, SuppressionReason],
    *,
    source: str,
    detail: Mapping[int, str] | None = None,
    now: datetime,
) -> list[str]:
    """Put on the list the numbers a provider reported, through their outbox messages
    (`reasons`: message id -> `invalid` or `opt_out`). An `invalid` report never replaces an entry
    already there; an `opt_out` replaces any other reason, as a keyword received does. One
    statement per reason with ON CONFLICT, so that two workers reporting the same number at once
    cannot fail each other's transaction. Returns the numbers added or changed, each audited
    (actor `source`, e.g. "channel:twilio")."""
    if not reasons:
        return []
    phones: dict[int, str] = dict(
        session.execute(
            select(OutboxMessage.id, Recipient.phone)  # type: ignore[call-overload]
            .join(Recipient, col(Recipient.id) == col(OutboxMessage.recipient_id))
            .where(col(OutboxMessage.id).in_(list(reasons)))
        ).all()
    )
    changed: list[str] = []
    for reason in (SuppressionReason.INVALID, SuppressionReason.OPT_OUT):
        rows: dict[str, dict[str, Any]] = {}
        for message_id, phone in phones.items():
            if reasons[message_id] == reason:
                why = (detail or {}).get(message_id) or f"reported by {source}"
                rows[phone] = {
                    "phone": phone,
                    "reason": reason.value,
                    "note": f"{why} (message {message_id})"[:NOTE_MAX],
                    "created_at": now,
                }
        if not rows:
            continue
        insert = upsert_insert(session.connection(), SUPPRESSION)
        if reason == SuppressionReason.OPT_OUT:
            statement = insert.on_conflict_do_update(
                index_elements=[SUPPRESSION.c.phone],
                set_={
                    "reason": insert.excluded.reason,
                    "note": insert.excluded.note,
                    "created_at": insert.excluded.created_at,
                },
                where=SUPPRESSION.c.reason != SuppressionReason.OPT_OUT.value,
            )
        else:
            statement = insert.on_conflict_do_nothing(index_elements=[SUPPRESSION.c.phone])
        done = session.execute(
            statement.returning(SUPPRESSION.c.phone), list(rows.values())
        ).scalars()
        for phone in done:
            changed.append(phone)
            values = rows[phone]
            audit.record(
                session,
                actor=source,
                action="suppression.reported",
                entity="suppression",
                entity_id=phone,
                now=now,
                after={"reason": values["reason"], "note": values["note"]},
            )
    return changed
