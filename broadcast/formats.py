"""A playlist as extended M3U (UTF-8, `.m3u8`) and as XSPF 1 (http://xspf.org/ns/0/).

Both list the tracks in play order; an item that repeats is listed that many times, so that a
plain player plays it as often as the JSON says. Overflow is not in them (it does not play); the
JSON document reports it.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from broadcast.playlist import Playlist, PlaylistItem

XSPF_NS = "http://xspf.org/ns/0/"


def _title(item: PlaylistItem) -> str:
    # One line: an #EXTINF title ends at the line's end.
    name = " ".join(item.title.split())
    return f"[{item.priority}] {item.start_local} {name} ({', '.join(item.communes)})"


def _played(playlist: Playlist) -> list[PlaylistItem]:
    return [item for item in playlist.items for _ in range(item.repeats)]


def to_m3u8(playlist: Playlist) -> str:
    """#EXTM3U, then per track `#EXTINF:<whole seconds>,<title>` and its absolute URL."""
    lines = ["#EXTM3U", f"#PLAYLIST:Loa {playlist.area} {playlist.date.isoformat()}"]
    for item in _played(playlist):
        lines.append(f"#EXTINF:{math.ceil(item.duration_ms / 1000)},{_title(item)}")
        lines.append(item.audio_url)
    return "\n".join(lines) + "\n"


def to_xspf(playlist: Playlist) -> bytes:
    """XSPF version 1; each track's duration in milliseconds, its item id as identifier."""
    ET.register_namespace("", XSPF_NS)

    def tag(name: str) -> str:
        return f"{{{XSPF_NS}}}{name}"

    root = ET.Element(tag("playlist"), {"version": "1"})
    ET.SubElement(
        root, tag("title")
    ).text = f"Loa {playlist.area} ({playlist.area_name}) {playlist.date.isoformat()}"
    tracks = ET.SubElement(root, tag("trackList"))
    for item in _played(playlist):
        track = ET.SubElement(tracks, tag("track"))
        ET.SubElement(track, tag("location")).text = item.audio_url
        ET.SubElement(track, tag("identifier")).text = f"urn:loa:broadcast-item:{item.id}"
        ET.SubElement(track, tag("title")).text = _title(item)
        ET.SubElement(track, tag("annotation")).text = (
            f"priority {item.priority}; communes {', '.join(item.communes)}; "
            f"valid until {item.valid_until.isoformat()}"
        )
        ET.SubElement(track, tag("duration")).text = str(item.duration_ms)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document
