"""`python -m sgpo`: the sgpo command."""

from sgpo.cli import app

app(prog_name="sgpo")
