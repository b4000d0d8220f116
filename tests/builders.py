"""Test data written straight through the models (the importers have their own tests)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from loa.models import Area, Recipient, RecipientTag

# Hà Tĩnh (42) > Đức Thọ (440) > two communes; Nghệ An (40) > one commune elsewhere.
AREAS = [
    ("42", "Tỉnh Hà Tĩnh", "province", None, "/42/"),
    ("440", "Huyện Đức Thọ", "district", "42", "/42/440/"),
    ("18301", "Xã Đức Đồng", "commune", "440", "/42/440/18301/"),
    ("18302", "Xã Đức Lạng", "commune", "440", "/42/440/18302/"),
    ("40", "Tỉnh Nghệ An", "province", None, "/40/"),
    ("16801", "Xã Nghi Lâm", "commune", "40", "/40/16801/"),
]


def add_areas(session: Session) -> None:
    for code, name, level, parent, path in AREAS:
        session.add(Area(code=code, name=name, level=level, parent_code=parent, path=path))
    session.flush()


def add_recipient(
    session: Session,
    phone: str,
    *,
    now: datetime,
    area: str | None = "18301",
    name: str | None = "Nguyễn Văn An",
    tags: tuple[str, ...] = (),
    attributes: dict[str, Any] | None = None,
) -> Recipient:
    recipient = Recipient(
        phone=phone,
        name=name,
        area_code=area,
        carrier="Viettel",
        attributes=attributes or {},
        created_at=now,
        updated_at=now,
    )
    session.add(recipient)
    session.flush()
    assert recipient.id is not None
    for tag in tags:
        session.add(RecipientTag(recipient_id=recipient.id, tag=tag))
    session.flush()
    return recipient
