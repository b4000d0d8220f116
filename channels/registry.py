"""Channel adapters by name: a wave says `sms`, the settings say which adapter carries it."""

from __future__ import annotations

import threading
from collections.abc import Callable

from channels.base import Channel
from channels.console import ConsoleChannel
from channels.simulated import SimulatedChannel
from loa.errors import InvalidInput, NotBuilt
from loa.settings import Settings

# Channels a wave may name, and the adapters that are built.
WAVE_CHANNELS = ("sms", "loudspeaker")
_PLANNED_ADAPTERS = ("twilio", "http_gateway")


def channel_for(wave_channel: str, settings: Settings) -> Channel:
    if wave_channel != "sms":
        raise NotBuilt(f"channel {wave_channel!r} has no adapter yet; only 'sms' can be sent")
    adapter = settings.sms_channel
    if adapter == "console":
        return ConsoleChannel(settings.console_sink)
    if adapter == "simulated":
        return SimulatedChannel(
            latency_ms=settings.simulated_latency_ms, concurrency=settings.simulated_concurrency
        )
    if adapter in _PLANNED_ADAPTERS:
        raise NotBuilt(f"LOA_SMS_CHANNEL={adapter!r}: that adapter is not built yet; use 'console'")
    raise InvalidInput(
        f"LOA_SMS_CHANNEL={adapter!r} is not a known channel adapter", field="sms_channel"
    )


def channel_lookup(settings: Settings) -> Callable[[str], Channel]:
    """A lookup that builds each adapter once (adapters may hold connections or pools)."""
    built: dict[str, Channel] = {}
    lock = threading.Lock()  # the dispatch loops of one process share it

    def lookup(wave_channel: str) -> Channel:
        with lock:
            if wave_channel not in built:
                built[wave_channel] = channel_for(wave_channel, settings)
            return built[wave_channel]

    return lookup
