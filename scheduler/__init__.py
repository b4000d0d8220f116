"""The scheduling core: campaign lifecycle, triggers, expansion into the outbox, dispatch, leadership."""
