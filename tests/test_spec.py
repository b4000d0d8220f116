"""Campaign spec validation: every problem is named with its wave and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loa.errors import SpecError
from scheduler.spec import load_spec, validate_spec


def _wave(**overrides: Any) -> dict[str, Any]:
    wave = {
        "name": "Lễ ra quân",
        "channel": "sms",
        "at": "2026-05-08 07:30",
        "audience": {"areas": ["42"]},
        "template": "Xin chao {{ name }}",
    }
    wave.update(overrides)
    return {k: v for k, v in wave.items() if v is not None}


RECURRING = {"from": "2026-05-01", "to": "2026-05-31", "times": ["06:00", "17:30"]}
RELATIVE = {"attribute": "card_expiry", "offset": "-7d", "at": "09:00"}


def test_a_valid_spec_keeps_class_and_trigger() -> None:
    spec = validate_spec({"name": "C", "waves": [_wave(**{"class": "qc"})]}, source="c.yaml")
    assert spec.waves[0].message_class == "qc"
    assert spec.waves[0].trigger == {"at": "2026-05-08 07:30"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"name": "C", "waves": [_wave(), _wave(name="Nhắc", tempalte="x")]},
            "c.yaml: wave 2 ('Nhắc'), field tempalte: Extra inputs are not permitted",
        ),
        (
            {"name": "C", "waves": [_wave(at=None)]},
            "wave 1 ('Lễ ra quân'): give exactly one trigger (at, recurring or relative); got none",
        ),
        (
            {"name": "C", "waves": [_wave(at="08/05/2026 7h30")]},
            "wave 1 ('Lễ ra quân'), field at: '08/05/2026 7h30' is not a local date-time",
        ),
        (
            {"name": "C", "waves": [_wave(channel="fax")]},
            "wave 1 ('Lễ ra quân'), field channel: Input should be 'sms' or 'loudspeaker'",
        ),
        ({"name": "C", "waves": [_wave(audience={})]}, "field audience: Value error"),
        (
            {"name": "C", "waves": [_wave(template="Xin chao {{ name ")]},
            "wave 1 ('Lễ ra quân'), field template: template does not parse",
        ),
        (
            {"name": "C", "timezone": "Asia/Hanoi_City", "waves": [_wave()]},
            "field timezone: unknown time zone 'Asia/Hanoi_City'",
        ),
        ({"name": "C", "waves": []}, "field waves: List should have at least 1 item"),
        (
            {"name": "C", "waves": [_wave(window="07:00-07:00")]},
            "wave 1 ('Lễ ra quân'), field window: send window '07:00-07:00' never opens",
        ),
        (
            {"name": "C", "waves": [_wave(window="7h-22h")]},
            "wave 1 ('Lễ ra quân'), field window: send window '7h-22h' is not in the form",
        ),
        (
            {"name": "C", "waves": [_wave(at=None, recurring={**RECURRING, "to": "2026-04-30"})]},
            "wave 1 ('Lễ ra quân'), field recurring: from 2026-05-01 is after to 2026-04-30",
        ),
        (
            {"name": "C", "waves": [_wave(at=None, recurring={**RECURRING, "times": ["25:00"]})]},
            "wave 1 ('Lễ ra quân'), field recurring.times: '25:00' is not a time of day",
        ),
        (
            {"name": "C", "waves": [_wave(at=None, recurring={**RECURRING, "weekdays": ["T8"]})]},
            "field recurring.weekdays: 'T8' is not a weekday",
        ),
        (
            {"name": "C", "waves": [_wave(at=None, recurring={**RECURRING, "to": "31/05/2026"})]},
            "field recurring.to: '31/05/2026' is not a date like '2026-05-31'",
        ),
        (
            {"name": "C", "waves": [_wave(at=None, relative={**RELATIVE, "offset": "-1 tuần"})]},
            "wave 1 ('Lễ ra quân'), field relative.offset: '-1 tuần' is not an offset",
        ),
        (
            {"name": "C", "waves": [_wave(at=None, relative={**RELATIVE, "offset": "-36h"})]},
            "field relative: at 09:00 goes with an offset in whole days",
        ),
        (
            {"name": "C", "waves": [_wave(relative=RELATIVE)]},
            "give exactly one trigger (at, recurring or relative); got ['at', 'relative']",
        ),
        (["not", "a", "mapping"], "a campaign spec must be a mapping"),
    ],
)
def test_errors_name_the_file_the_wave_and_the_field(raw: Any, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        validate_spec(raw, source="c.yaml")
    assert caught.value.message.startswith("c.yaml: ")
    assert expected.replace("Value error", "") in caught.value.message


def test_series_triggers_are_kept_as_written() -> None:
    spec = validate_spec(
        {
            "name": "C",
            "waves": [
                _wave(at=None, recurring={**RECURRING, "weekdays": ["t2", "t5"]}),
                _wave(at=None, relative=RELATIVE, window="08:00-20:00"),
            ],
        },
        source="c.yaml",
    )
    assert spec.waves[0].trigger == {"recurring": {**RECURRING, "weekdays": ["t2", "t5"]}}
    assert spec.waves[1].trigger == {"relative": RELATIVE}
    assert spec.waves[1].window == "08:00-20:00"


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: C\nwaves:\n  - name: [unclosed\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"bad.yaml: not valid YAML at line \d+"):
        load_spec(path)
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "missing.yaml")
