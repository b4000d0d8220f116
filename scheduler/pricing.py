"""What one SMS segment costs, by the adapter that carries it, the recipient's carrier and the
message class (LOA_SMS_PRICES), falling back to LOA_SMS_PRICE_PER_SEGMENT."""

from __future__ import annotations

from typing import NamedTuple

from loa.settings import Settings

ANY = "*"


class PriceRule(NamedTuple):
    """One entry of LOA_SMS_PRICES: the price of a segment for (adapter, carrier, class), each
    lower case or "*" for any."""

    adapter: str
    carrier: str
    message_class: str
    price: float

    def matches(self, adapter: str, carrier: str, message_class: str) -> bool:
        return all(
            rule in (ANY, value)
            for rule, value in (
                (self.adapter, adapter),
                (self.carrier, carrier),
                (self.message_class, message_class),
            )
        )


def price_rules(settings: Settings) -> list[PriceRule]:
    """LOA_SMS_PRICES as rules, most specific first: the first that matches a segment prices it.
    The adapter counts most, then the carrier, then the class. The statistics turn the same list
    into SQL (stats/rollup.py), so that both price alike."""
    rules = [
        PriceRule(adapter.lower(), carrier.lower(), cls.lower(), price)
        for adapter, carriers in settings.sms_prices.items()
        for carrier, classes in carriers.items()
        for cls, price in classes.items()
    ]
    return sorted(rules, key=lambda r: (r.adapter == ANY, r.carrier == ANY, r.message_class == ANY))


def segment_price(
    settings: Settings, *, adapter: str, carrier: str | None, message_class: str
) -> float | None:
    """The price of one segment, or None when no price is set for it at all: the first rule that
    matches (adapter, carrier, class), e.g. (adapter, carrier, *) before (adapter, *, class)
    before (*, carrier, class); else LOA_SMS_PRICE_PER_SEGMENT."""
    key = (adapter.lower(), (carrier or ANY).lower(), message_class.lower())
    for rule in price_rules(settings):
        if rule.matches(*key):
            return rule.price
    return settings.sms_price_per_segment or None
