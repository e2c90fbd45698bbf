"""What the command-line apps' --help shows of their commands."""

from __future__ import annotations

import inspect

import typer


def one_line_summaries(app: typer.Typer) -> None:
    """Each command's line in its app's --help list: the first paragraph of its docstring with
    the docstring's line breaks joined. typer's rich help keeps them there, so a summary
    wrapped in the source broke mid-sentence in the list."""
    for command in app.registered_commands:
        doc = command.callback.__doc__ if command.callback else None
        if command.short_help is None and doc:
            command.short_help = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
