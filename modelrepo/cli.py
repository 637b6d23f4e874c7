"""What every command of the project (`vae-serve`, `vae-train`, `vae-export`, `vae-client`,
`vae-jobs`) shares: `--help` that shows each option's default, and usage errors as one line
with exit status 2 (argparse's convention), never a traceback."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse with defaults shown in --help and one-line usage errors."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage block first; one line says it, --help has the rest
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help (unless the help already says it or there is
    none to say); descriptions keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS, False) \
                or action.option_strings == [] or isinstance(action, argparse._HelpAction):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def usage_error(prog: str, message: str) -> NoReturn:
    """A usage error found after parsing (a missing data folder, a bad combination)."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(2)
