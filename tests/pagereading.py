"""Reading the operator page's figures out of its HTML: the page marks what it shows with data-*
attributes (data-campaign="1" > data-outcome="delivered" > data-field="count"), and this reads
the text of each marked element under the marks of the elements around it."""

from __future__ import annotations

from html.parser import HTMLParser

# Elements that never have an end tag in HTML.
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta"})


class _Marks(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, list[str], list[str]]] = []  # (tag, marks, text)
        self.found: dict[tuple[str, ...], str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            return
        marks = [f"{k[5:]}={v or ''}" for k, v in attrs if k.startswith("data-")]
        self.open.append((tag, marks, []))

    def handle_endtag(self, tag: str) -> None:
        while self.open:
            open_tag, marks, text = self.open.pop()
            if marks:
                chain = tuple(m for _, ms, _ in self.open for m in ms) + tuple(marks)
                self.found[chain] = " ".join("".join(text).split())
            if open_tag == tag:
                return

    def handle_data(self, data: str) -> None:
        for _, _, text in self.open:
            text.append(data)


def marked(html: str) -> dict[tuple[str, ...], str]:
    """{("campaign=1", "outcome=delivered", "field=count"): "9", ...}: the text of every element
    that has data-* attributes, keyed by those of its ancestors and its own."""
    parser = _Marks()
    parser.feed(html)
    parser.close()
    return parser.found
