"""The content-addressed store of encoded files, and their rows in `audio_asset`.

A file lives at LOA_DATA_DIR/audio/<first two hex digits>/<sha256>.mp3. It is written under
LOA_DATA_DIR/audio/tmp (the same file system) and renamed into place, so a reader never sees a
half-written file; the same content always lands at the same name, so a second add of it, or
two adds racing, leave one file and one row.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from loa.errors import InvalidInput, NotFound
from loa.models import AudioAsset
from loa.paging import DEFAULT_PAGE, Key, keyset_page

SHA256_PATTERN: Final = r"^[0-9a-f]{64}$"
_SHA256 = re.compile(SHA256_PATTERN)


def audio_root(data_dir: Path) -> Path:
    return data_dir / "audio"


def asset_path(data_dir: Path, sha256: str) -> Path:
    if not _SHA256.match(sha256):  # the name comes from a URL: never a path of its own
        raise InvalidInput(f"{sha256!r} is not a SHA-256 (64 lowercase hex digits)")
    return audio_root(data_dir) / sha256[:2] / f"{sha256}.mp3"


@contextmanager
def work_directory(data_dir: Path) -> Iterator[Path]:
    """A scratch directory on the store's file system, removed with everything in it."""
    scratch = audio_root(data_dir) / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="ingest-", dir=scratch))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def save(
    session: Session, asset: AudioAsset, encoded: Path, data_dir: Path
) -> tuple[AudioAsset, bool]:
    """Store the encoded file and its row; (the stored asset, whether it is new).

    The row is flushed before the file is renamed into place and the file is removed again if
    the row does not commit, so a failure leaves neither. (A crash between the rename and the
    commit leaves a file without a row: harmless, the next add of that content reuses it.)
    """
    existing = session.get(AudioAsset, asset.sha256)
    if existing is not None:
        return existing, False
    target = asset_path(data_dir, asset.sha256)
    already_there = target.exists()
    session.add(asset)
    try:
        session.flush()
    except IntegrityError:  # the same content added at the same moment by another request
        session.rollback()
        raced = session.get(AudioAsset, asset.sha256)
        if raced is None:
            raise
        return raced, False
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(encoded, target)
    try:
        session.commit()
    except BaseException:
        if not already_there:
            target.unlink(missing_ok=True)
        raise
    return asset, True


def get_asset(session: Session, sha256: str) -> AudioAsset:
    asset = session.get(AudioAsset, sha256) if _SHA256.match(sha256) else None
    if asset is None:
        raise NotFound(f"no audio asset {sha256}")
    return asset


# Newest first. A small table (one row per distinct recording), so the order needs no index.
AUDIO_ORDER: Final = (
    Key(col(AudioAsset.created_at), descending=True),
    Key(col(AudioAsset.sha256), descending=True),
)


def list_assets(
    session: Session,
    *,
    after: str | None = None,
    limit: int = DEFAULT_PAGE,
    only: Select[str] | None = None,
) -> tuple[list[AudioAsset], str | None]:
    """One keyset page of stored audio, newest first (of the sha256s `only` selects, if given),
    and the cursor of the next page."""
    statement = select(AudioAsset)
    if only is not None:
        statement = statement.where(col(AudioAsset.sha256).in_(only))
    return keyset_page(session, statement, AUDIO_ORDER, after=after, limit=limit)
