"""The HTML report: every stage's manifest, metrics and training curves rendered with Jinja2."""
