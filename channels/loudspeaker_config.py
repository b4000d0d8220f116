"""Where each area's loudspeaker controller listens: a YAML or JSON file (named by
LOA_LOUDSPEAKER_ENDPOINTS_FILE), validated whole when it is loaded, keyed by area code.

An area's endpoint also serves every area under it that has none of its own: a province-wide
platform is one entry under the province's code, and a district that runs its own controller
overrides it with an entry under the district's code. Which areas lie under which is data (the
area table's `path`); the caller hands the chain of codes in, so this module needs no database.

    timeout_seconds: 10           # default for every endpoint (optional)
    endpoints:
      "42":                        # the province: every commune under it ...
        url: https://loa-push.example.vn/api/push
        secret_env: LOA_LS_SECRET_42
      "436":                       # ... except district 436's, which have their own controller
        url: https://vendor.example.com/v2/playlists
        secret: "a shared secret of 32+ characters"
        timeout_seconds: 20
        headers: {X-Vendor-Tenant: "ha-tinh-436"}
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from loa.errors import InvalidInput

# Headers the adapter writes itself; a configured header may not replace them, or the signature
# and the idempotency key would no longer mean what the receiver is told they mean.
RESERVED_HEADER_PREFIX = "x-loa-"
RESERVED_HEADERS = frozenset({"content-type", "content-length", "host"})
# A shared secret shorter than this is guessable offline from one captured signature.
MIN_SECRET_CHARS = 16
_AREA_CODE = re.compile(r"^[0-9A-Za-z_-]{1,16}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token


class EndpointSpec(BaseModel):
    """One entry of the file, as written; the secret is resolved by `load_endpoints`."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl
    secret: SecretStr | None = None
    secret_env: str | None = None  # the name of an environment variable holding the secret
    timeout_seconds: float | None = Field(default=None, gt=0, le=300)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _headers_allowed(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a header name")
            lowered = name.lower()
            if lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_HEADER_PREFIX):
                raise ValueError(f"{name} is written by Loa and cannot be configured")
            if "\r" in header_value or "\n" in header_value:
                raise ValueError(f"{name}: a header value cannot hold a line break")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> EndpointSpec:
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("give exactly one of secret and secret_env")
        if self.secret is not None and len(self.secret.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"secret: at least {MIN_SECRET_CHARS} characters")
        return self


class EndpointsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    endpoints: dict[str, EndpointSpec] = Field(min_length=1)

    @field_validator("endpoints", mode="before")
    @classmethod
    def _codes_are_codes(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            for code in value:
                # YAML reads an unquoted 42 as a number; an area code is text.
                if not _AREA_CODE.match(str(code)):
                    raise ValueError(f"{code!r} is not an area code")
            return {str(code): spec for code, spec in value.items()}
        return value


@dataclass(frozen=True)
class Endpoint:
    """A controller, ready to push to: the area it is configured for, and its secret resolved."""

    area_code: str
    url: str
    secret: str
    timeout_seconds: float
    headers: Mapping[str, str]

    def __repr__(self) -> str:  # never print the secret
        return f"Endpoint(area_code={self.area_code!r}, url={self.url!r})"


@dataclass(frozen=True)
class EndpointConfig:
    endpoints: Mapping[str, Endpoint]  # by the area code they are configured for
    source: str  # the file, for messages

    def endpoint_for(self, area_chain: Sequence[str]) -> Endpoint | None:
        """The endpoint serving the last area of `area_chain` (codes from the root down, as in
        the area's `path`): its own, else its nearest ancestor's; None when none is configured."""
        for code in reversed(area_chain):
            if code in self.endpoints:
                return self.endpoints[code]
        return None


def area_chain(path: str) -> list[str]:
    """The codes of an area's `path` ("/42/436/18301/"), root first."""
    return [code for code in path.split("/") if code]


def _where(loc: tuple[int | str, ...]) -> str:
    if len(loc) >= 2 and loc[0] == "endpoints":
        field = ".".join(str(p) for p in loc[2:])
        return f"area {loc[1]}" + (f": {field}" if field else "")
    return ".".join(str(p) for p in loc) or "the file"


def parse_endpoints(
    data: Any, *, source: str, environ: Mapping[str, str] | None = None
) -> EndpointConfig:
    """Validate a parsed file whole; every problem is reported at once, each naming its area and
    field. Secrets named by `secret_env` are read from `environ` (default: the process's)."""
    environ = os.environ if environ is None else environ
    try:
        parsed = EndpointsFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"{source}: {problems}", field="loudspeaker_endpoints_file") from None
    endpoints: dict[str, Endpoint] = {}
    missing: list[str] = []
    for code, spec in parsed.endpoints.items():
        if spec.secret_env is not None:
            secret = environ.get(spec.secret_env, "")
            if len(secret) < MIN_SECRET_CHARS:
                state = "is not set" if not secret else f"holds under {MIN_SECRET_CHARS} characters"
                missing.append(f"area {code}: secret_env: {spec.secret_env} {state}")
                continue
        else:
            assert spec.secret is not None  # the model validator saw to it
            secret = spec.secret.get_secret_value()
        endpoints[code] = Endpoint(
            area_code=code,
            url=str(spec.url),
            secret=secret,
            timeout_seconds=spec.timeout_seconds or parsed.timeout_seconds,
            headers=dict(spec.headers),
        )
    if missing:
        raise InvalidInput(f"{source}: {'; '.join(missing)}", field="loudspeaker_endpoints_file")
    return EndpointConfig(endpoints=endpoints, source=source)


def load_endpoints(
    path: Path | None, *, environ: Mapping[str, str] | None = None
) -> EndpointConfig:
    """Read and validate the endpoints file (YAML, or JSON by a .json suffix)."""
    if path is None:
        raise InvalidInput(
            "no loudspeaker endpoints configured: set LOA_LOUDSPEAKER_ENDPOINTS_FILE to a YAML "
            "file (see docs/loudspeaker-endpoints.example.yaml)",
            field="loudspeaker_endpoints_file",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            f"LOA_LOUDSPEAKER_ENDPOINTS_FILE={path}: cannot be read ({exc})",
            field="loudspeaker_endpoints_file",
        ) from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise InvalidInput(
            f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}",
            field="loudspeaker_endpoints_file",
        ) from None
    return parse_endpoints(data, source=str(path), environ=environ)
