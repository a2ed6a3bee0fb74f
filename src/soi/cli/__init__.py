"""The ``soi`` command line (typer). Each command lives in its own module; heavy imports stay inside."""
