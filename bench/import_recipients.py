"""Benchmark: importing a large recipient CSV (normalization and upsert), fresh and again.

    .venv/bin/python -m bench.import_recipients --rows 1000000 --runs 3 \
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/loa_bench]

Generates a realistic office file once (seeded, so every run reads the same bytes): Vietnamese
names, every usual way of writing a mobile number (0..., 84..., +84..., 0084..., spaces, dots,
dashes, the dropped leading zero, old 11-digit 01xx numbers), commune codes that exist in the area
table, a tag column with one or two tags, a card_expiry column in dd/mm/yyyy, about 2% repeated
phones and about 1% bad rows (landlines, short numbers, impossible dates, unknown communes).

Each run starts from a fresh database (SQLite file in a temp dir, or the PostgreSQL database named
in the URL, dropped and recreated), loads the areas, then times `import_recipients` end to end
(reading, normalization, upsert, commit) twice over the same file: first into an empty table
(all inserts), then again (all updates). Prints medians and the peak resident memory of the
process.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, text

from audience.importer import ImportReport, import_recipients
from bench.common import recreate_database
from loa import schema
from loa.db import make_engine, session_scope
from loa.settings import Settings

T0 = datetime(2026, 5, 8, 0, 0, tzinfo=UTC)
PROVINCE = "42"
COMMUNES = [f"{18000 + 3 * i:05d}" for i in range(200)]  # ~ the communes of one province
# Current mobile prefixes (after the 2018 conversion) of the five networks.
PREFIXES = [
    "086",
    "096",
    "097",
    "098",
    "032",
    "033",
    "034",
    "035",
    "036",
    "037",
    "038",
    "039",
    "088",
    "091",
    "094",
    "083",
    "084",
    "085",
    "081",
    "082",
    "089",
    "090",
    "093",
    "070",
    "076",
    "077",
    "078",
    "079",
    "092",
    "056",
    "058",
    "099",
    "059",
]
OLD_PREFIXES = [
    "0162",
    "0163",
    "0164",
    "0165",
    "0166",
    "0167",
    "0168",
    "0169",
    "0120",
    "0121",
    "0123",
    "0124",
    "0125",
]
SURNAMES = [
    "Nguyễn",
    "Trần",
    "Lê",
    "Phạm",
    "Hoàng",
    "Phan",
    "Vũ",
    "Võ",
    "Đặng",
    "Bùi",
    "Đỗ",
    "Hồ",
    "Ngô",
    "Dương",
    "Lý",
]
MIDDLE = ["Văn", "Thị", "Hữu", "Đức", "Minh", "Thanh", "Ngọc", "Quang", "Xuân", "Thu", "Hồng"]
GIVEN = [
    "An",
    "Bình",
    "Chi",
    "Dũng",
    "Hà",
    "Hải",
    "Hạnh",
    "Hương",
    "Khoa",
    "Lan",
    "Linh",
    "Long",
    "Mai",
    "Nam",
    "Nga",
    "Phúc",
    "Quân",
    "Sơn",
    "Tâm",
    "Thảo",
    "Trang",
    "Tuấn",
    "Việt",
    "Yến",
]
TAGS = ["nong-dan", "lao-dong-tu-do", "tieu-thuong", "ho-ngheo", "can-ngheo", "dung-dong"]


def _phone_forms(digits: str) -> list[str]:
    """Ways offices write the national number 0xxxxxxxxx (10 digits)."""
    n = digits[1:]
    return [
        digits,
        digits,
        digits,  # the plain form is the most common
        f"+84{n}",
        f"84{n}",
        f"0084{n}",
        f"{digits[:4]} {digits[4:7]} {digits[7:]}",
        f"{digits[:4]}.{digits[4:7]}.{digits[7:]}",
        f"{digits[:4]}-{digits[4:7]}-{digits[7:]}",
        f"+84 {n[:3]} {n[3:6]} {n[6:]}",
        n,  # a spreadsheet dropped the leading zero
    ]


def generate(path: Path, rows: int, seed: int = 4) -> None:
    rng = random.Random(seed)
    start = date(2026, 1, 1)
    recent: list[str] = []
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["so_dien_thoai", "ho_ten", "ma_xa", "nhom", "card_expiry"])
        for i in range(rows):
            roll = rng.random()
            if roll < 0.02 and recent:
                phone = rng.choice(recent)  # the same person again, from another list
            elif roll < 0.05:
                old = rng.choice(OLD_PREFIXES)
                phone = f"{old}{rng.randrange(10_000_000):07d}"
            else:
                digits = f"{rng.choice(PREFIXES)}{rng.randrange(10_000_000):07d}"
                phone = rng.choice(_phone_forms(digits))
            if len(recent) < 1000:
                recent.append(phone)
            else:
                recent[i % 1000] = phone
            name = f"{rng.choice(SURNAMES)} {rng.choice(MIDDLE)} {rng.choice(GIVEN)}"
            commune = rng.choice(COMMUNES)
            tags = "|".join(rng.sample(TAGS, rng.choice((1, 1, 2))))
            expiry = (start + timedelta(days=rng.randrange(730))).strftime("%d/%m/%Y")
            bad = rng.random()
            if bad < 0.003:
                phone = f"0239 3{rng.randrange(1_000_000):06d}"  # a Hà Tĩnh landline
            elif bad < 0.005:
                phone = f"09{rng.randrange(1_000_000):06d}"  # digits missing
            elif bad < 0.008:
                expiry = f"31/02/{rng.choice((2026, 2027))}"
            elif bad < 0.01:
                commune = "99999"
            writer.writerow([phone, name, commune, tags, expiry])


def _fresh_engine(url: str | None, tmp: Path) -> Engine:
    if url is None:
        url = f"sqlite:///{tmp / 'bench.db'}"
    else:
        recreate_database(url)
    engine = make_engine(Settings(database_url=url, data_dir=tmp))
    schema.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO area (code, name, level, parent_code, path) "
                "VALUES (:code, :name, :level, :parent, :path)"
            ),
            [
                {
                    "code": PROVINCE,
                    "name": "Hà Tĩnh",
                    "level": "province",
                    "parent": None,
                    "path": f"/{PROVINCE}/",
                }
            ]
            + [
                {
                    "code": c,
                    "name": f"Xã {c}",
                    "level": "commune",
                    "parent": PROVINCE,
                    "path": f"/{PROVINCE}/{c}/",
                }
                for c in COMMUNES
            ],
        )
    return engine


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _backend_cpu(pid: int | None) -> float | None:
    """CPU seconds of a PostgreSQL backend, when the server runs on this machine (/proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed_import(engine: Engine, path: Path) -> tuple[float, ImportReport]:
    """Wall time of one import; prints the CPU time of this process and of the server's backend
    beside it (the machine may be shared: CPU time says what the import itself cost)."""
    started, cpu = time.perf_counter(), _process_cpu()
    with session_scope(engine) as session:
        pid = None
        if engine.dialect.name == "postgresql":
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
        backend = _backend_cpu(pid)
        report = import_recipients(session, path, now=T0)
        backend_after = _backend_cpu(pid)
    elapsed = time.perf_counter() - started
    server = (
        f", server backend {backend_after - backend:.1f} s"
        if backend is not None and backend_after is not None
        else ""
    )
    print(
        f"    CPU: this process {_process_cpu() - cpu:.1f} s{server}; "
        f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}",
        flush=True,
    )
    return elapsed, report


def one_run(url: str | None, path: Path) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = _fresh_engine(url, Path(tmp))
        first_s, first = _timed_import(engine, path)
        print(
            f"  run: fresh {first_s:.2f} s (read {first.rows_read}, inserted {first.inserted}, "
            f"updated {first.updated}, rejected {len(first.rejected)}, "
            f"converted {first.converted})",
            flush=True,
        )
        again_s, again = _timed_import(engine, path)
        print(
            f"  run: again {again_s:.2f} s (inserted {again.inserted}, updated {again.updated}, "
            f"rejected {len(again.rejected)})",
            flush=True,
        )
        assert again.inserted == 0 and again.updated == first.inserted, (first, again)
        engine.dispose()
        return first_s, again_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--file", type=Path, default=None, help="keep the generated file here (reused if present)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.file or Path(tmp) / "recipients.csv"
        if not path.exists():
            started = time.perf_counter()
            generate(path, args.rows)
            print(f"generated {args.rows} rows in {time.perf_counter() - started:.1f} s: {path}")
        results = [one_run(args.database_url, path) for _ in range(args.runs)]
    fresh = statistics.median(r[0] for r in results)
    again = statistics.median(r[1] for r in results)
    backend = "postgresql" if args.database_url else "sqlite"
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{backend}: {args.rows} rows, {args.runs} runs (median)")
    print(f"  fresh    {fresh:8.2f} s  {args.rows / fresh:10.0f} rows/s")
    print(f"  again    {again:8.2f} s  {args.rows / again:10.0f} rows/s")
    print(f"  peak RSS {peak_mb:8.0f} MB")


if __name__ == "__main__":
    main()
