"""When to retry a transient failure: exponential backoff with full jitter.

Jitter spreads the retries of a whole batch that failed together (a provider's 429, say) so that
they do not come back as one burst.
"""

from __future__ import annotations

import random


def retry_delay(
    attempts: int,
    *,
    base_seconds: float,
    max_seconds: float,
    provider_hint: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt `attempts + 1`: uniform in [ceiling/2, ceiling], where the
    ceiling doubles with each attempt up to `max_seconds`. A provider's Retry-After is a floor."""
    ceiling = min(max_seconds, base_seconds * 2 ** max(attempts - 1, 0))
    delay = (rng or random).uniform(ceiling / 2, ceiling)
    return max(delay, provider_hint or 0.0)
