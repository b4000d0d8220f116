"""Message templates and SMS text: rendering (Jinja2 in a sandbox), and later encoding and segments."""
