"""The scheduling core: lifecycle, triggers, expansion into the outbox, dispatch, leadership."""
