"""Channel adapters by name: a wave says `sms`, the settings say which adapter carries it.

LOA_SMS_CHANNEL is one adapter name (`console`, `simulated`, `twilio`, `gateway:<name>` for a
gateway of LOA_GATEWAYS_FILE) or an ordered failover list of them, comma-separated
(`twilio,gateway:viettel`): channels/failover.py."""

from __future__ import annotations

import threading
from collections.abc import Callable

from channels.base import Channel
from channels.console import ConsoleChannel
from channels.simulated import SimulatedChannel
from loa.errors import InvalidInput
from loa.settings import Settings

# Channels a wave may name, and the adapters that are built.
WAVE_CHANNELS = ("sms", "loudspeaker")
SMS_ADAPTERS = ("console", "simulated", "twilio", "gateway:<name>")
GATEWAY_PREFIX = "gateway:"


def primary_sms_adapter(settings: Settings) -> str:
    """The adapter that carries SMS while it is up (the first of a failover list): the one whose
    prices a plan quotes. Never raises: check_channel refuses a malformed list."""
    return settings.sms_channel.split(",")[0].strip()


def sms_adapters(settings: Settings) -> list[str]:
    """The adapter names of LOA_SMS_CHANNEL, in order; InvalidInput for a malformed list or an
    unknown name. Checks no adapter's own settings (check_channel does)."""
    names = [part.strip() for part in settings.sms_channel.split(",")]
    if not all(names):
        raise InvalidInput(
            f"LOA_SMS_CHANNEL={settings.sms_channel!r} has an empty name; write adapter names "
            "separated by commas, e.g. twilio,gateway:viettel",
            field="sms_channel",
        )
    for name in names:
        known = name in SMS_ADAPTERS or (
            name.startswith(GATEWAY_PREFIX) and len(name) > len(GATEWAY_PREFIX)
        )
        if not known:
            raise InvalidInput(
                f"LOA_SMS_CHANNEL: {name!r} is not a known channel adapter; use one of "
                f"{', '.join(SMS_ADAPTERS)}, or several separated by commas",
                field="sms_channel",
            )
    if len(set(names)) != len(names):
        raise InvalidInput(
            f"LOA_SMS_CHANNEL={settings.sms_channel!r} names an adapter twice", field="sms_channel"
        )
    return names


def _check_adapter(name: str, settings: Settings) -> None:
    if name == "twilio":
        from channels.twilio import config_from_settings

        config_from_settings(settings)
    elif name.startswith(GATEWAY_PREFIX):
        from channels.http_gateway import gateway_from_settings

        gateway_from_settings(settings, name.removeprefix(GATEWAY_PREFIX))


def check_channel(wave_channel: str, settings: Settings) -> None:
    """Refuse, with the reason, a channel that could not send: no adapter for it, an unknown
    adapter name, or an adapter whose settings (or gateway configuration) are missing or
    malformed. Every adapter of a failover list is checked: one that is misconfigured is refused
    here rather than discovered as "down" at the first send. Builds nothing: for plan time, and
    for a worker before it claims anything."""
    if wave_channel != "sms":
        # Loudspeaker waves never reach a message adapter: their items are played from district
        # playlists and pushed to controllers (broadcast/).
        raise InvalidInput(
            f"channel {wave_channel!r} is not sent through a message adapter; only 'sms' is "
            "(loudspeaker waves are played from district playlists: loa playlist show)",
            field="channel",
        )
    for name in sms_adapters(settings):
        _check_adapter(name, settings)


def _build_adapter(name: str, settings: Settings) -> Channel:
    if name == "console":
        return ConsoleChannel(settings.console_sink)
    if name == "simulated":
        return SimulatedChannel(
            latency_ms=settings.simulated_latency_ms, concurrency=settings.simulated_concurrency
        )
    if name.startswith(GATEWAY_PREFIX):
        from channels.http_gateway import HttpGatewayChannel, gateway_from_settings

        gateway, callback = gateway_from_settings(settings, name.removeprefix(GATEWAY_PREFIX))
        return HttpGatewayChannel(gateway, callback_url=callback)
    # Imported here: the SDK (and requests) load only in processes that send through Twilio.
    from channels.twilio import TwilioChannel, config_from_settings

    return TwilioChannel(config_from_settings(settings))


def channel_for(wave_channel: str, settings: Settings) -> Channel:
    check_channel(wave_channel, settings)
    names = sms_adapters(settings)
    if len(names) == 1:
        return _build_adapter(names[0], settings)
    from channels.failover import FailoverChannel

    return FailoverChannel(
        [_build_adapter(name, settings) for name in names],
        after_failures=settings.failover_after_failures,
        cooldown_seconds=settings.failover_cooldown_seconds,
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
