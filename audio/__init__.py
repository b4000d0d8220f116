"""Audio for commune loudspeakers: ingest, loudness normalisation, encoding, storage by hash.

Not built yet: loudspeaker waves are refused at campaign creation until it is.
"""
