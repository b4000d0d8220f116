"""The operator page: a small server-rendered web page at `/` for people with a browser (campaign
progress, delivery per district, failures by reason, a district's playlist for today), behind a
login with an API key. Templates and static files are served by Loa itself: no build step and
nothing fetched from elsewhere, so the page works in an office without internet access."""
