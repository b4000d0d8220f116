"""The campaign spec (YAML or the API's JSON): its shape, and validation of the whole spec before
anything is written. Every error names the wave and the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loa.errors import InvalidInput, SpecError
from scheduler.triggers import (
    parse_date,
    parse_local,
    parse_offset,
    parse_time,
    parse_weekday,
)
from scheduler.windows import parse_window
from templates.render import TemplateProblem, check_template

MessageClass = Literal["qc", "info", "care"]

# An alphanumeric sender id: at most 11 characters (3GPP TS 23.040 gives the originating address
# 11 GSM-7 characters), letters, digits, space, '.', '-' and '_', at least one letter; what the
# carriers register as brandnames in Vietnam.
_BRANDNAME = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ._-]{1,11}")


def check_brandname(value: str | None) -> str | None:
    if value is not None and not _BRANDNAME.fullmatch(value):
        raise ValueError(
            f"brandname {value!r} is not a sender name: at most 11 letters, digits, spaces, "
            "'.', '-' or '_', with at least one letter (e.g. BHXH-HT)"
        )
    return value


class _Strict(BaseModel):
    # Unknown keys are errors: a typo such as `tempalte:` must not silently send nothing.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AudienceSpec(_Strict):
    areas: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    # A saved segment's name (audience/segments.py); areas and tags beside it narrow it further.
    segment: str | None = Field(default=None, min_length=1, max_length=100)

    @model_validator(mode="after")
    def _not_everyone_by_accident(self) -> AudienceSpec:
        if not self.areas and not self.tags and self.segment is None:
            raise ValueError("give at least one of areas, tags or segment")
        return self


class RecurringSpec(_Strict):
    """`times` (local) on every date from `from` to `to`, or only on `weekdays`."""

    from_: str = Field(alias="from")
    to: str
    times: list[str] = Field(min_length=1)
    weekdays: list[str] | None = None

    @field_validator("from_", "to")
    @classmethod
    def _is_date(cls, value: str) -> str:
        parse_date(value)
        return value

    @field_validator("times")
    @classmethod
    def _are_times(cls, value: list[str]) -> list[str]:
        parsed = [parse_time(t) for t in value]
        if len(set(parsed)) != len(parsed):
            raise ValueError("a time is listed twice")
        return value

    @field_validator("weekdays")
    @classmethod
    def _are_weekdays(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("give at least one weekday, or leave weekdays out for every day")
            for day in value:
                parse_weekday(day)
        return value

    @model_validator(mode="after")
    def _in_order(self) -> RecurringSpec:
        if parse_date(self.from_) > parse_date(self.to):
            raise ValueError(f"from {self.from_} is after to {self.to}")
        return self


class RelativeSpec(_Strict):
    """An offset from a date attribute of each recipient: `card_expiry`, `-7d`, at `09:00`."""

    attribute: str = Field(min_length=1, max_length=200)
    offset: str
    at: str | None = None
    until: str | None = None  # the last date (of the attribute) that makes an occurrence

    @field_validator("offset")
    @classmethod
    def _is_offset(cls, value: str) -> str:
        parse_offset(value)
        return value

    @field_validator("at")
    @classmethod
    def _is_time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time(value)
        return value

    @field_validator("until")
    @classmethod
    def _is_date(cls, value: str | None) -> str | None:
        if value is not None:
            parse_date(value)
        return value

    @model_validator(mode="after")
    def _at_needs_whole_days(self) -> RelativeSpec:
        offset = parse_offset(self.offset)
        if self.at is not None and offset.seconds:
            raise ValueError(
                f"at {self.at} goes with an offset in whole days (e.g. '-7d'), not {self.offset!r}"
            )
        return self


class WaveSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    channel: Literal["sms", "loudspeaker"]
    message_class: MessageClass = Field(default="info", alias="class")
    at: str | None = None
    recurring: RecurringSpec | None = None
    relative: RelativeSpec | None = None
    audience: AudienceSpec
    template: str | None = None
    unaccent: bool = False
    # The class's send window (a setting) unless given: "08:00-20:00", or "always".
    window: str | None = None
    # Loudspeaker waves: a stored audio asset (its sha256 or its name), its priority (Circular
    # 39/2020: normal, priority, emergency), and how many times it plays in each slot.
    audio: str | None = Field(default=None, min_length=1, max_length=200)
    priority: Literal["normal", "priority", "emergency"] | None = None
    repeats: int | None = Field(default=None, ge=1, le=20)
    # The sender name the SMS shows; the campaign's, else LOA_SMS_BRANDNAME, when not given.
    # Advertising (qc) must have one (Decree 91/2020).
    brandname: str | None = None

    _brandname = field_validator("brandname")(check_brandname)

    @model_validator(mode="after")
    def _one_trigger_and_content(self) -> WaveSpec:
        given = [k for k in ("at", "recurring", "relative") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one trigger (at, recurring or relative); got {given or 'none'}"
            )
        if self.channel == "sms" and not self.template:
            raise ValueError("an sms wave needs a template")
        if self.channel == "loudspeaker":
            self._check_loudspeaker()
        else:
            given = [k for k in ("audio", "priority", "repeats") if getattr(self, k) is not None]
            if given:
                raise ValueError(f"field {', '.join(given)}: only a loudspeaker wave has these")
        return self

    def _check_loudspeaker(self) -> None:
        if not self.audio:
            raise ValueError(
                "field audio: a loudspeaker wave needs audio (a stored file's name or sha256)"
            )
        if self.template is not None:
            raise ValueError("field template: a loudspeaker wave plays audio; it has no template")
        if self.relative is not None:
            # Loudspeakers reach communes, not people: there is no recipient date to follow.
            raise ValueError(
                "field relative: a loudspeaker wave needs at or recurring, not relative"
            )
        if not self.audience.areas or self.audience.tags or self.audience.segment:
            raise ValueError(
                "field audience: a loudspeaker wave's audience is areas only (communes, or "
                "every commune of a district or province): tags and segments pick people, "
                "not loudspeakers"
            )

    @field_validator("at")
    @classmethod
    def _at_is_a_local_time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_local(value)
        return value

    @field_validator("window")
    @classmethod
    def _window_opens(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_window(value)
            except InvalidInput as exc:
                raise ValueError(exc.message) from None
        return value

    @property
    def trigger(self) -> dict[str, Any]:
        if self.at is not None:
            return {"at": self.at}
        if self.recurring is not None:
            return {"recurring": self.recurring.model_dump(by_alias=True, exclude_none=True)}
        assert self.relative is not None
        return {"relative": self.relative.model_dump(exclude_none=True)}


class CampaignSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    timezone: str | None = None
    brandname: str | None = None  # for every wave that names none
    waves: list[WaveSpec] = Field(min_length=1)

    _brandname = field_validator("brandname")(check_brandname)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"unknown time zone {value!r} (use e.g. Asia/Ho_Chi_Minh)"
                ) from None
        return value


def _where(loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    """An error location as a person reads it: wave 2 ('Lễ ra quân'), field audience.areas."""
    if len(loc) >= 2 and loc[0] == "waves" and isinstance(loc[1], int):
        index = loc[1]
        waves = raw.get("waves")
        name = None
        if isinstance(waves, list) and index < len(waves) and isinstance(waves[index], dict):
            name = waves[index].get("name")
        wave = f"wave {index + 1}" + (f" ({name!r})" if name else "")
        rest = ".".join(str(p) for p in loc[2:] if not str(p).startswith("function-"))
        return f"{wave}, field {rest}" if rest else wave
    return "field " + ".".join(str(p) for p in loc) if loc else "the spec"


def validate_spec(raw: Any, *, source: str) -> CampaignSpec:
    """Validate a whole spec; raise one SpecError listing every problem, each with where it is."""
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a campaign spec must be a mapping with name and waves")
    try:
        spec = CampaignSpec.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{_where(tuple(error['loc']), raw)}: {message}")
        # The field of the first problem, as a path (waves.0.template), for the API's error body.
        first = ".".join(str(part) for part in exc.errors()[0]["loc"]) or None
        raise SpecError(f"{source}: " + "; ".join(problems), field=first) from None
    for index, wave in enumerate(spec.waves):
        if wave.template is not None:
            try:
                check_template(wave.template)
            except TemplateProblem as exc:
                raise SpecError(
                    f"{source}: wave {index + 1} ({wave.name!r}), field template: {exc.message}",
                    field=f"waves.{index}.template",
                ) from None
    return spec


def load_spec(path: Path) -> CampaignSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a UTF-8 text file") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{path}: not valid YAML{where}: {problem}") from None
    return validate_spec(raw, source=str(path))
