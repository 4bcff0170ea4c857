"""Write the option tables of docs/reproduce.md from the command line's own parsers.

Each table sits between ``<!-- options: COMMAND -->`` and ``<!-- /options -->``; this script
rewrites what is between them (``python docs/gen_options.py``), and tests/test_docs.py fails when
a table differs from what the parser says (an option added, renamed or re-documented without
regenerating). Plug-ins found at run time (``$RESID_WRITES_PLUGINS``) are left out: the tables list
the package's own. The ``<!-- experiments -->`` block lists every built-in experiment with its
stage and the options ``run NAME --opt KEY=VALUE`` takes (from the registry's declarations).
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reproduce.md"
BLOCK = re.compile(r"(<!-- options: (\w+) -->\n)(.*?)(<!-- /options -->)", flags=re.S)


EXPERIMENTS = re.compile(r"(<!-- experiments -->\n)(.*?)(<!-- /experiments -->)", flags=re.S)


def _parsers() -> dict[str, argparse.ArgumentParser]:
    sys.path.insert(0, str(ROOT))
    from experiments.study import cli

    parser = cli.build_parser()  # the parser imports no plug-in (choices are looked up lazily)
    return dict(parser._subparsers._group_actions[0].choices)


def experiments_table() -> str:
    """Every built-in experiment: its stage, what it measures and its declared options."""
    sys.path.insert(0, str(ROOT))
    from experiments.registry import get_plugin
    from experiments.study import cli

    lines = ["| `run NAME` | stage | measures | options (`--opt KEY=VALUE`) |", "|---|---|---|---|"]
    for name in cli.RUNNABLE:
        p = get_plugin(name)
        opts = ", ".join(f"`{k}`" for k in p.options if k not in cli.CONTEXT_FLAGS) or "(none)"
        lines.append(f"| `{name}` | {p.stage} | {_cell(p.help)} | {opts} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    text = re.sub(r"\$[A-Z_]+", lambda m: f"`{m.group(0)}`", " ".join(str(text).split()))
    return text.replace("|", "\\|")


def _default(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction) or action.default in (None, argparse.SUPPRESS):
        return ""
    value = action.default
    if isinstance(value, list | tuple):
        value = " ".join(map(str, value))
    return f"`{value}`" if value != "" else "(none)"


def table(parser: argparse.ArgumentParser) -> str:
    """A markdown table of ``parser``'s options: option (with its argument), default, meaning."""
    lines = ["| option | default | meaning |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            arg = ""
            if action.nargs != 0:
                metavar = action.metavar or action.dest.upper()
                arg = f" {metavar}" + (" ..." if action.nargs in ("+", "*") else "")
            name = f"`{action.option_strings[-1]}{arg}`"
        else:
            name = f"`{action.dest.upper()}`"
        meaning = (action.help or "").replace("%%", "%")
        if action.choices and not action.option_strings:
            meaning += f" ({', '.join(action.choices)})"
        elif action.choices and action.metavar is None:
            meaning += f" (one of {', '.join(action.choices)})"
        lines.append(f"| {name} | {_default(action)} | {_cell(meaning)} |")
    return "\n".join(lines) + "\n"


def render(page: str) -> str:
    """``page`` with every options block regenerated."""
    parsers = _parsers()
    page = BLOCK.sub(lambda m: m.group(1) + table(parsers[m.group(2)]) + m.group(4), page)
    return EXPERIMENTS.sub(lambda m: m.group(1) + experiments_table() + m.group(3), page)


def main() -> None:
    text = PAGE.read_text()
    new = render(text)
    if new != text:
        PAGE.write_text(new)
        print(f"updated {PAGE}")
    else:
        print(f"{PAGE} is up to date")


if __name__ == "__main__":
    main()
