"""``carbonctl``: the carbon-aware scheduler without Kubernetes.

Each subcommand lives in its own module (``cli/<name>.py``) and exposes a click command
named ``command``; this module only assembles them and turns expected errors into one
clear line on stderr with exit code 2 (never a traceback).
"""

from __future__ import annotations

import importlib
import sys

import click

from carbonaware import __version__
from carbonaware.core.durations import DurationError
from carbonaware.providers.base import ConfigError, ProviderError

# subcommand name -> (module under carbonaware.cli that defines `command`, one-line help)
SUBCOMMANDS = {
    "intensity": ("intensity", "Print the latest carbon intensity for a zone."),
    "run": ("run", "Wait for a cleaner grid, then run a command and account for it."),
    "plot": ("plot", "Render carbon_plot.png from an intensity log (CSV or a job's ConfigMap)."),
    "backtest": ("backtest", "Replay job arrivals against real traces and compare policies."),
}

# Errors a user can cause with bad input or a failing provider: one line, exit 2.
USER_ERRORS = (ProviderError, ConfigError, DurationError, click.BadParameter)


class LazyGroup(click.Group):
    """Imports a subcommand's module only when it runs, so ``carbonctl --help`` stays fast."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module = importlib.import_module(f"carbonaware.cli.{SUBCOMMANDS[name][0]}")
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing uses the static help above: no subcommand module is imported for --help.
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="carbonctl")
def cli() -> None:
    """Run work when the grid is cleaner, and account for its carbon."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        # Without standalone mode click returns (rather than raises) a command's exit code.
        exit_code = cli.main(args=argv, prog_name="carbonctl", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("carbonctl: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # usage errors: click's own message, exit 2
        click.echo(f"carbonctl: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except USER_ERRORS as exc:
        click.echo(f"carbonctl: error: {exc}", err=True)
        sys.exit(2)
    sys.exit(exit_code if isinstance(exit_code, int) else 0)


if __name__ == "__main__":
    main()
