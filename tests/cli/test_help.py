"""Every ``qilin`` command and option explains itself in ``--help``, with its default."""

from __future__ import annotations

import argparse

import pytest

from qilin.cli import build_parser, iter_parsers, main


def _options() -> list[tuple[str, argparse.Action]]:
    out = []
    for parser in iter_parsers(build_parser()):
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(
                    action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            out.append((parser.prog, action))
    return out


def test_every_option_has_a_description() -> None:
    missing = [f"{prog} {'/'.join(a.option_strings) or a.dest}" for prog, a in _options()
               if not (a.help or "").strip()]
    assert not missing, f"options without help: {missing}"


def test_every_default_is_shown() -> None:
    parser = build_parser()
    for child in iter_parsers(parser):
        text = child.format_help()
        for action in child._actions:
            if (action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
                    and action.help not in (None, argparse.SUPPRESS)):
                assert "default" in (action.help or "") or f"default: {action.default}" in text, (
                    child.prog, action.option_strings)


def test_version(capsys) -> None:
    import qilin

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"qilin {qilin.__version__}"
