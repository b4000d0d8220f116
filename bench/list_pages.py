"""Keyset pages on PostgreSQL: how long one page of the suppression list takes at the start and
deep into a list of N numbers (default 1,000,000), against the OFFSET page it replaced; and
recipient search pages (phone, area, tag, name prefix) over the same number of recipients.

    python -m bench.list_pages [--rows 1000000] [--database-url URL] [--explain]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlmodel import Session, col

from audience.lookup import RecipientQuery, search_recipients
from audience.suppression import SUPPRESSION_ORDER, list_suppressions
from bench.common import recreate_database
from loa import schema
from loa.db import make_engine
from loa.models import Suppression
from loa.paging import encode_cursor
from loa.settings import Settings

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/loa_bench_pages"
LOAD = [
    """INSERT INTO area (code, name, level, parent_code, path)
       VALUES ('42', 'Tinh', 'province', NULL, '/42/')""",
    """INSERT INTO area (code, name, level, parent_code, path)
       SELECT (400 + d)::text, 'Huyen ' || d, 'district', '42', '/42/' || (400 + d) || '/'
       FROM generate_series(0, 9) d""",
    """INSERT INTO area (code, name, level, parent_code, path)
       SELECT (10000 + d * 100 + c)::text, 'Xa ' || c, 'commune', (400 + d)::text,
              '/42/' || (400 + d) || '/' || (10000 + d * 100 + c) || '/'
       FROM generate_series(0, 9) d, generate_series(0, 99) c""",
    # A do-not-contact list loaded over a year, many numbers per instant (imports).
    """INSERT INTO suppression (phone, reason, note, created_at)
       SELECT '+8491' || lpad(g::text, 7, '0'),
              CASE WHEN g % 50 = 0 THEN 'opt_out' ELSE 'do_not_contact' END, NULL,
              TIMESTAMPTZ '2025-05-01 00:00+00' + (g / 100) * INTERVAL '30 seconds'
       FROM generate_series(1, :n) g""",
    # Recipients: 1,000 communes; 'Nguyen ...' for most, one in 100,000 'Khuc ...'.
    """INSERT INTO recipient (phone, name, area_code, carrier, phone_converted, attributes,
                              created_at, updated_at)
       SELECT '+8498' || lpad(g::text, 7, '0'),
              CASE WHEN g % 100000 = 7 THEN 'Khuc Van ' || g ELSE 'Nguyen Van ' || g END,
              (10000 + g % 1000)::text, 'Viettel', false, '{}'::jsonb, now(), now()
       FROM generate_series(1, :n) g""",
    """UPDATE recipient SET tags = ARRAY['nong-dan'] WHERE id % 3 = 0""",
    """UPDATE recipient SET tags = tags || ARRAY['hiem'] WHERE id % 50000 = 1""",
]


def _timed(run: Callable[[], Any], runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE plans")
    args = parser.parse_args()

    recreate_database(args.database_url)
    with tempfile.TemporaryDirectory() as data_dir:
        engine = make_engine(Settings(database_url=args.database_url, data_dir=Path(data_dir)))
        schema.upgrade(engine)
        started = time.perf_counter()
        with engine.begin() as conn:
            for statement in LOAD:
                conn.execute(text(statement), {"n": args.rows})
            conn.execute(text("ANALYZE"))
        print(
            f"loaded {args.rows:,} suppressions and recipients in "
            f"{time.perf_counter() - started:.0f} s"
        )

        with Session(engine) as session:
            depth = args.rows * 9 // 10
            # The cursor a client would hold after paging to `depth` (found once, not timed).
            row = session.execute(
                select(col(Suppression.created_at), col(Suppression.phone))
                .order_by(*[k.column.desc() for k in SUPPRESSION_ORDER])
                .offset(depth - 1)
                .limit(1)
            ).one()
            deep = encode_cursor(list(row))

            def offset_page(offset: int) -> None:
                # The query the list ran before keyset pages.
                session.scalars(
                    select(Suppression)
                    .order_by(col(Suppression.created_at).desc(), col(Suppression.phone))
                    .offset(offset)
                    .limit(args.limit)
                ).all()

            cases: dict[str, Callable[[], Any]] = {
                "suppressions, first page (keyset)": lambda: list_suppressions(
                    session, limit=args.limit
                ),
                f"suppressions, page at row {depth:,} (keyset)": lambda: list_suppressions(
                    session, after=deep, limit=args.limit
                ),
                "suppressions, first page (OFFSET 0, as before)": lambda: offset_page(0),
                f"suppressions, page at row {depth:,} (OFFSET, as before)": lambda: offset_page(
                    depth
                ),
                "suppressions, reason opt_out, first page": lambda: list_suppressions(
                    session, reason="opt_out", limit=args.limit
                ),
            }
            searches = {
                "recipients by phone": RecipientQuery(phone="0980000123"),
                "recipients in a district": RecipientQuery(area="405"),
                "recipients with a common tag": RecipientQuery(tag="nong-dan"),
                "recipients with a rare tag": RecipientQuery(tag="hiem"),
                "recipients, common name prefix": RecipientQuery(name="Nguyen"),
                "recipients, rare name prefix (whole walk)": RecipientQuery(name="Khuc"),
                "recipients, rare name prefix in a commune": RecipientQuery(
                    name="Khuc", area="10007"
                ),
            }
            for label, query in searches.items():
                cases[label] = partial(search_recipients, session, query, limit=args.limit)

            print(f"\npage of {args.limit}, {args.runs} runs | median ms | max ms")
            for label, run in cases.items():
                run()  # warm the cache: the figures are for a database that is in use
                median, worst = _timed(run, args.runs)
                print(f"{label} | {median:.1f} | {worst:.1f}")

            if args.explain:
                for label, sql in (
                    (
                        "keyset, deep",
                        "SELECT * FROM suppression WHERE created_at <= :t AND "
                        "(created_at < :t OR created_at = :t AND phone < :p) "
                        "ORDER BY created_at DESC, phone DESC LIMIT 101",
                    ),
                ):
                    plan = session.execute(
                        text("EXPLAIN (ANALYZE, BUFFERS) " + sql), {"t": row[0], "p": row[1]}
                    ).scalars()
                    print(f"\n{label}:\n" + "\n".join(plan))
        engine.dispose()


if __name__ == "__main__":
    main()
