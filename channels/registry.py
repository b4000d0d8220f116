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
SMS_ADAPTERS = ("console", "simulated", "twilio")
_PLANNED_ADAPTERS = ("http_gateway",)


def check_channel(wave_channel: str, settings: Settings) -> None:
    """Refuse, with the reason, a channel that could not send: no adapter for it, an unknown
    adapter name, or an adapter whose settings are missing or malformed. Builds nothing: for
    plan time, and for a worker before it claims anything."""
    if wave_channel != "sms":
        raise NotBuilt(f"channel {wave_channel!r} has no adapter yet; only 'sms' can be sent")
    adapter = settings.sms_channel
    if adapter in _PLANNED_ADAPTERS:
        raise NotBuilt(
            f"LOA_SMS_CHANNEL={adapter!r}: that adapter is not built yet; use one of "
            f"{', '.join(SMS_ADAPTERS)}"
        )
    if adapter not in SMS_ADAPTERS:
        raise InvalidInput(
            f"LOA_SMS_CHANNEL={adapter!r} is not a known channel adapter; use one of "
            f"{', '.join(SMS_ADAPTERS)}",
            field="sms_channel",
        )
    if adapter == "twilio":
        from channels.twilio import config_from_settings

        config_from_settings(settings)


def channel_for(wave_channel: str, settings: Settings) -> Channel:
    check_channel(wave_channel, settings)
    adapter = settings.sms_channel
    if adapter == "console":
        return ConsoleChannel(settings.console_sink)
    if adapter == "simulated":
        return SimulatedChannel(
            latency_ms=settings.simulated_latency_ms, concurrency=settings.simulated_concurrency
        )
    # Imported here: the SDK (and requests) load only in processes that send through Twilio.
    from channels.twilio import TwilioChannel, config_from_settings

    return TwilioChannel(config_from_settings(settings))


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
