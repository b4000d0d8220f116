"""Segment counts on PostgreSQL: how long `loa segments count` takes over N recipients (default
200,000 in 1,000 communes of 10 districts, three tags, a card expiry date each), and the query
plans, to check that the count is set-based and uses recipient_date, ix_recipient_area_id and
ix_recipient_tags (GIN).

    python -m bench.segment_count [--recipients 200000] [--database-url URL] [--explain]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlmodel import Session

from audience.segments import count_filter, filter_condition, parse_filter
from bench.common import recreate_database
from loa import schema
from loa.db import make_engine
from loa.models import Recipient
from loa.settings import Settings

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/loa_bench_segments"
TODAY = date(2026, 5, 8)
FILTERS: dict[str, dict[str, Any]] = {
    "office example (district, tag, expiry within 30 days)": {
        "areas": ["403"],
        "tags": ["nong-dan"],
        "attributes": {"card_expiry": {"within_next_days": 30}},
    },
    "province, any of two tags": {"areas": ["42"], "tags": ["nong-dan", "ho-ngheo"]},
    "expiry within 30 days": {"attributes": {"card_expiry": {"within_next_days": 30}}},
    "one commune": {"areas": ["10305"]},
    "all of two tags, gender equals": {
        "all_tags": ["nong-dan", "ho-ngheo"],
        "attributes": {"gender": {"equals": "nu"}},
    },
}

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
    """INSERT INTO recipient (phone, name, area_code, carrier, phone_converted, attributes,
                              created_at, updated_at)
       SELECT '+8491' || lpad(g::text, 7, '0'), 'Nguoi ' || g, (10000 + g % 1000)::text,
              'Viettel', false,
              jsonb_build_object(
                  'card_expiry', (DATE '2026-05-08' + ((g * 7919) % 730 - 365))::text,
                  'gender', CASE WHEN g % 2 = 0 THEN 'nu' ELSE 'nam' END),
              now(), now()
       FROM generate_series(1, :n) g""",
    """UPDATE recipient SET tags = ARRAY(
           SELECT t FROM unnest(ARRAY[
               CASE WHEN id % 7 = 0 THEN 'ho-ngheo' END,
               CASE WHEN id % 3 = 0 THEN 'nong-dan' END,
               CASE WHEN id % 5 = 1 THEN 'tieu-thuong' END]) AS t
           WHERE t IS NOT NULL)
       WHERE id % 7 = 0 OR id % 3 = 0 OR id % 5 = 1""",
    """INSERT INTO recipient_date (recipient_id, attribute, value)
       SELECT id, 'card_expiry', (attributes ->> 'card_expiry')::date FROM recipient""",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE plans")
    args = parser.parse_args()

    recreate_database(args.database_url)
    engine = make_engine(
        Settings(database_url=args.database_url, data_dir=Path(tempfile.mkdtemp()))
    )
    schema.upgrade(engine)
    started = time.perf_counter()
    with engine.begin() as conn:
        for statement in LOAD:
            conn.execute(text(statement), {"n": args.recipients})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # As autovacuum leaves a table in steady use: statistics and the visibility map (without
        # it every index-only scan visits the heap).
        conn.execute(text("VACUUM ANALYZE"))
    print(f"loaded {args.recipients:,} recipients in {time.perf_counter() - started:.1f} s")

    with Session(engine) as session:
        for label, raw in FILTERS.items():
            flt = parse_filter(raw, source=label)
            times = []
            for _ in range(args.runs):
                began = time.perf_counter()
                counted = count_filter(session, flt, today=TODAY, sample=10)
                times.append(time.perf_counter() - began)
            print(
                f"{label}: {counted.count:,} recipients; count + sample of 10 in "
                f"{statistics.median(times) * 1000:.1f} ms (median of {args.runs})"
            )
            if args.explain:
                condition = filter_condition(flt, today=TODAY, dialect="postgresql")
                query = select(func.count()).select_from(Recipient).where(condition)
                compiled = query.compile(
                    dialect=engine.dialect, compile_kwargs={"render_postcompile": True}
                )
                # JSONB parameters cannot be rendered as literals: pass them as JSON text.
                params = {
                    k: json.dumps(v) if isinstance(v, dict) else v
                    for k, v in compiled.params.items()
                }
                plan = session.connection().exec_driver_sql(
                    f"EXPLAIN (ANALYZE, COSTS OFF) {compiled}", params
                )
                print("\n".join("    " + row[0] for row in plan))
    engine.dispose()


if __name__ == "__main__":
    main()
