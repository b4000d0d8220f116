"""Audio for commune loudspeakers: decoding and checks (decode.py), silence trimming (trim.py),
loudness measurement (loudness.py), normalisation and MP3 encoding (encode.py), the
content-addressed store (store.py), and the one entry point that ties them (ingest.py).

Everything runs on ffmpeg (ffmpeg.py finds it); pydub is used for what it does well on PCM held
in memory (silence detection), never for probing (its mediainfo needs ffprobe).
"""
