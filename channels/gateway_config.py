"""The HTTP gateways' configuration: one YAML (or JSON) file named by LOA_GATEWAYS_FILE, with one
entry per aggregator account, validated whole with pydantic before anything is sent. An error
names the gateway and the field ("gateways.viettel.response.accepted: ...").

Secrets are never in the file: it names the environment variables that hold them (`*_env`), so
the file can be reviewed and versioned; a variable that is unset is an error at load time.

The request body is a JSON document whose string values may hold `${placeholder}`s
(string.Template syntax, `$$` for a dollar sign). Substituting into the values of a parsed
document, rather than rendering text that is then parsed as JSON, means a message body with
quotes, backslashes or newlines can never break the JSON or add a field: the HTTP client
serialises the document. A value that is exactly one placeholder takes the value's own type
(`"${validity_seconds}"` becomes a number), so a gateway that wants numbers gets numbers.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loa.errors import InvalidInput

# What a body may say; each is filled per message by channels/http_gateway.py.
PLACEHOLDERS = frozenset(
    {
        "to",  # E.164: +84912345678
        "to_national",  # 0912345678
        "to_international",  # 84912345678 (no plus sign)
        "body",  # the rendered text, NFC
        "brandname",  # the gateway's registered sender name
        "request_id",  # deterministic per outbox message: the aggregator's de-duplication key
        "message_id",  # Loa's outbox id (a number)
        "callback_url",  # where the aggregator posts delivery reports
        "unicode",  # 1 when the text needs UCS-2 (Vietnamese diacritics), else 0
        "validity_seconds",  # seconds until the wave's deadline; 0 when it has none
    }
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER = re.compile(r"^[A-Za-z0-9-]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _env_name(value: str) -> str:
    if not _ENV.match(value):
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


def _header_name(value: str) -> str:
    if not _HEADER.match(value):
        raise ValueError(f"{value!r} is not an HTTP header name")
    return value


EnvName = Annotated[str, Field(min_length=1)]


class NoAuth(_Strict):
    type: Literal["none"]


class BasicAuth(_Strict):
    type: Literal["basic"]
    username: str = Field(min_length=1)
    password_env: EnvName

    _check = field_validator("password_env")(_env_name)


class BearerAuth(_Strict):
    type: Literal["bearer"]
    token_env: EnvName

    _check = field_validator("token_env")(_env_name)


class HeaderAuth(_Strict):
    """An API key in a header of its own (X-API-Key and the like)."""

    type: Literal["header"]
    header: str
    key_env: EnvName

    _check_env = field_validator("key_env")(_env_name)
    _check_header = field_validator("header")(_header_name)


Auth = Annotated[NoAuth | BasicAuth | BearerAuth | HeaderAuth, Field(discriminator="type")]

Codes = Annotated[list[str], Field(default_factory=list)]


class ResponseMapping(_Strict):
    """How to read the aggregator's answer. Paths are dotted (`data.msgId`, `result.0.code`).
    Codes compare as text (`0` and `"0"` are the same code)."""

    code: str = Field(min_length=1)  # where the result code is
    message_id: str | None = None  # where the aggregator's id for the message is
    accepted: Codes  # it took the message
    # It has a message with this request id already (a retry of one it took): accepted.
    duplicate: Codes
    # The account cannot send now (credentials, brandname, balance, IP not allowed): nothing was
    # sent; the adapter is down, and a failover list moves on to the next adapter.
    unavailable: Codes
    transient: Codes  # not sent; retry later (rate limits, the carrier busy)
    invalid_number: Codes  # permanent; the number is suppressed
    opted_out: Codes  # permanent; the number is suppressed as an opt-out
    permanent: Codes  # not sent and never will be (content refused, and the like)
    # Any other code is taken as permanent, and logged: the aggregator answered and refused.

    @field_validator(
        "accepted",
        "duplicate",
        "unavailable",
        "transient",
        "invalid_number",
        "opted_out",
        "permanent",
        mode="before",
    )
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int | float) else v for v in value]
        return value

    @model_validator(mode="after")
    def _codes_disjoint(self) -> ResponseMapping:
        if not self.accepted:
            raise ValueError("accepted: at least one code must mean the message was taken")
        seen: dict[str, str] = {}
        for field in (
            "accepted",
            "duplicate",
            "unavailable",
            "transient",
            "invalid_number",
            "opted_out",
            "permanent",
        ):
            for code in getattr(self, field):
                if code in seen:
                    raise ValueError(f"code {code!r} is in both {seen[code]} and {field}")
                seen[code] = field
        return self


class SecretHeaderAuth(_Strict):
    """The aggregator sends a shared secret in a header with each report."""

    type: Literal["secret_header"]
    header: str
    secret_env: EnvName

    _check_env = field_validator("secret_env")(_env_name)
    _check_header = field_validator("header")(_header_name)


class HmacAuth(_Strict):
    """The aggregator signs the raw body with HMAC-SHA256 under a shared secret."""

    type: Literal["hmac_sha256"]
    header: str
    secret_env: EnvName
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""  # e.g. "sha256=" before the digest

    _check_env = field_validator("secret_env")(_env_name)
    _check_header = field_validator("header")(_header_name)


ReportAuth = Annotated[SecretHeaderAuth | HmacAuth, Field(discriminator="type")]


class ReportMapping(_Strict):
    """The delivery reports the aggregator posts to /webhooks/gateway/<name>/status."""

    auth: ReportAuth
    format: Literal["json", "form"] = "json"
    # Where the list of reports is, when one request carries several; absent: one per request.
    items: str | None = None
    request_id: str | None = None  # where the request id Loa sent is
    message_id: str | None = None  # where the aggregator's message id is
    status: str = Field(min_length=1)
    error_code: str | None = None
    # The aggregator's status values -> Loa's. A value not listed is refused (422, logged).
    statuses: dict[str, Literal["sent", "delivered", "undelivered", "failed", "ignore"]]
    # Error codes in reports that say the number is bad or unsubscribed: the number is suppressed.
    invalid_number: Codes
    opted_out: Codes

    @field_validator("statuses", mode="before")
    @classmethod
    def _keys_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        return value

    @field_validator("invalid_number", "opted_out", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int | float) else v for v in value]
        return value

    @model_validator(mode="after")
    def _finds_its_message(self) -> ReportMapping:
        if not self.request_id and not self.message_id:
            raise ValueError("request_id or message_id: a report must say which message it is")
        if not self.statuses:
            raise ValueError("statuses: map at least one of the aggregator's status values")
        return self


class GatewayConfig(_Strict):
    url: str
    method: Literal["POST", "PUT"] = "POST"
    auth: Auth = NoAuth(type="none")
    headers: dict[str, str] = Field(default_factory=dict)  # extra fixed headers
    brandname: str = ""
    body: dict[str, Any]
    response: ResponseMapping
    report: ReportMapping | None = None  # None: the aggregator sends no delivery reports
    # The request id sent for outbox message N is `<request_id_prefix>N`: the same for every
    # attempt of one message, so the aggregator can drop a retry of something it has.
    request_id_prefix: str = Field(default="loa-", pattern=r"^[A-Za-z0-9_.:-]{0,24}$")
    concurrency: int = Field(default=32, ge=1, le=1000)
    timeout_seconds: float = Field(default=15, gt=0, le=300)
    max_body_chars: int = Field(default=1600, ge=1, le=10_000)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("body")
    @classmethod
    def _known_placeholders(cls, value: dict[str, Any]) -> dict[str, Any]:
        for text in _strings(value):
            template = string.Template(text)
            if not template.is_valid():
                raise ValueError(f"{text!r} is not a valid template (use ${{name}}, $$ for $)")
            unknown = set(template.get_identifiers()) - PLACEHOLDERS
            if unknown:
                raise ValueError(
                    f"unknown placeholder(s) {', '.join(sorted(unknown))} in {text!r}; known: "
                    f"{', '.join(sorted(PLACEHOLDERS))}"
                )
        return value


def _strings(document: Any) -> list[str]:
    if isinstance(document, str):
        return [document]
    if isinstance(document, dict):
        return [s for v in document.values() for s in _strings(v)]
    if isinstance(document, list):
        return [s for v in document for s in _strings(v)]
    return []


class GatewaysFile(_Strict):
    gateways: dict[str, GatewayConfig]

    @field_validator("gateways")
    @classmethod
    def _names(cls, value: dict[str, GatewayConfig]) -> dict[str, GatewayConfig]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(
                    f"gateway name {name!r}: use 1-48 lower-case letters, digits, '-' or '_'"
                )
        return value


@dataclass(frozen=True)
class Gateway:
    """One gateway's configuration with its secrets read from the environment."""

    name: str  # as in the file; the adapter is called `gateway:<name>`
    config: GatewayConfig
    headers: dict[str, str]  # fixed headers, authentication included
    basic_auth: tuple[str, str] | None
    report_secret: bytes | None  # None: the gateway has no delivery reports


def _secret(environ: Mapping[str, str], name: str, where: str) -> str:
    value = environ.get(name, "")
    if not value:
        raise InvalidInput(
            f"{where}: the environment variable {name} is not set (it holds the secret)",
            field=where,
        )
    return value


def _resolve(name: str, config: GatewayConfig, environ: Mapping[str, str]) -> Gateway:
    where = f"gateways.{name}"
    headers = dict(config.headers)
    basic: tuple[str, str] | None = None
    auth = config.auth
    if isinstance(auth, BasicAuth):
        basic = (auth.username, _secret(environ, auth.password_env, f"{where}.auth.password_env"))
    elif isinstance(auth, BearerAuth):
        token = _secret(environ, auth.token_env, f"{where}.auth.token_env")
        headers["Authorization"] = f"Bearer {token}"
    elif isinstance(auth, HeaderAuth):
        headers[auth.header] = _secret(environ, auth.key_env, f"{where}.auth.key_env")
    report_secret = None
    if config.report is not None:
        report_secret = _secret(
            environ, config.report.auth.secret_env, f"{where}.report.auth.secret_env"
        ).encode("utf-8")
    return Gateway(name, config, headers, basic, report_secret)


def parse_gateways(
    document: Any, *, source: str, environ: Mapping[str, str] | None = None
) -> dict[str, Gateway]:
    """Validate a parsed gateways document whole; InvalidInput naming the gateway and field."""
    try:
        parsed = GatewaysFile.model_validate(document)
    except ValidationError as exc:
        problems, fields = [], []
        for error in exc.errors():
            # Without the union's tag: "auth.bearer.token_env" reads "auth.token_env".
            where = ".".join(
                str(p)
                for p in error["loc"]
                if p not in ("none", "basic", "bearer", "header", "secret_header", "hmac_sha256")
            )
            problems.append(f"{where or 'the file'}: {error['msg']}")
            fields.append(where)
        raise InvalidInput(f"{source}: " + "; ".join(problems), field=fields[0] or None) from None
    env = os.environ if environ is None else environ
    return {name: _resolve(name, config, env) for name, config in parsed.gateways.items()}


def load_gateways(path: Path, *, environ: Mapping[str, str] | None = None) -> dict[str, Gateway]:
    """Read and validate LOA_GATEWAYS_FILE (YAML, which includes JSON)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(
            f"LOA_GATEWAYS_FILE={str(path)!r} cannot be read: {exc.strerror}",
            field="gateways_file",
        ) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML: {exc}", field="gateways_file") from None
    return parse_gateways(document, source=str(path), environ=environ)
