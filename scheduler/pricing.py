"""What one SMS segment costs, by the adapter that carries it, the recipient's carrier and the
message class (LOA_SMS_PRICES), falling back to LOA_SMS_PRICE_PER_SEGMENT."""

from __future__ import annotations

from loa.settings import Settings

ANY = "*"


def segment_price(
    settings: Settings, *, adapter: str, carrier: str | None, message_class: str
) -> float | None:
    """The price of one segment, or None when no price is set for it at all. The most specific
    entry wins, the adapter counting most: (adapter, carrier, class), (adapter, carrier, *),
    (adapter, *, class), (adapter, *, *), then the same under adapter "*"."""
    carrier_key = (carrier or ANY).lower()
    for channel in (adapter.lower(), ANY):
        carriers = settings.sms_prices.get(channel)
        if not carriers:
            continue
        for car in dict.fromkeys((carrier_key, ANY)):
            classes = carriers.get(car)
            if not classes:
                continue
            for cls in (message_class.lower(), ANY):
                if cls in classes:
                    return classes[cls]
    return settings.sms_price_per_segment or None
