"""Loudspeaker broadcasting: broadcast items from loudspeaker waves, slot capacity, district
playlists (JSON, M3U8, XSPF) and proof of play."""
