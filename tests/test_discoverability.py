"""`unifybench --version`, `ls presets|settings NAME`, help on every flag, examples on the main commands."""
import argparse

import pytest

import unifybench
from unifybench.cli import build_parser, main as cli_main, _plugged_parsers


def parsers():
    p = build_parser([])
    _plugged_parsers(p._subparsers._group_actions[0])
    return p, p._subparsers._group_actions[0].choices


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"unifybench {unifybench.__version__}"


def test_every_flag_has_help_and_the_main_commands_have_examples():
    _, subs = parsers()
    for name, sp in subs.items():
        for action in sp._actions:
            assert action.help and action.help != argparse.SUPPRESS, (name, action.option_strings or action.dest)
    for name in ("run", "eval", "table"):
        assert subs[name].epilog and "examples:" in subs[name].epilog and f"unifybench {name}" in subs[name].epilog
    if "reproduce" in subs:
        assert "examples:" in (subs["reproduce"].epilog or "")
    assert "(default: 0)" in subs["run"].format_help()           # --seed's default is shown


def test_preset_help_lists_the_methods_real_presets(capsys):
    with pytest.raises(SystemExit):
        cli_main(["run", "--method", "yochameleon", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    from unifybench.methods.yochameleon import YoChameleon
    assert "yochameleon: " + ", ".join(["paper", *YoChameleon.presets]) in text


def test_ls_presets_and_settings(capsys):
    from dataclasses import fields
    from unifybench.methods.yochameleon import YoChameleon, YoChameleonConfig
    assert cli_main(["ls", "presets", "yochameleon"]) == 0
    lines = dict(l.split("\t") for l in capsys.readouterr().out.strip().splitlines())
    assert set(lines) == {"paper", *YoChameleon.presets} and lines["paper"] == "the defaults"
    assert "epochs=3" in lines["tiny"]
    assert cli_main(["ls", "settings", "yochameleon"]) == 0
    rows = [l.split(None, 4) for l in capsys.readouterr().out.splitlines()[2:]]
    by_name = {r[0]: r for r in rows}
    assert set(by_name) == {f.name for f in fields(YoChameleonConfig)}
    assert by_name["epochs"][1:] == ["int", "16", "(0,inf)", "passes over the training samples"]
    assert by_name["lr"][3:] == ["(0,inf)", "AdamW learning rate of the concept tokens"]   # declared on the field
    assert by_name["top_p"][3] == "(0,1]" and by_name["weight_decay"][3] == "[0,inf)"     # declared; the default
    assert by_name["backbone"][3] == "-"
    assert cli_main(["ls", "settings", "bleu"]) == 0
    out = capsys.readouterr().out
    assert "scale" in out and "1: 0-1 scale; 100: sacrebleu's 0-100" in out
    assert cli_main(["ls", "settings", "nosuchthing"]) == 2
    assert cli_main(["ls", "presets"]) == 2


def test_comments_are_read_with_tokenize_not_by_splitting_on_hash():
    from unifybench.settings import _comments
    src = 'class C:\n    a: str = "x # not a comment"\n    b: int = 1   # the b\n    d = {"k": 1,  # kay\n         "m": 2, "n": 3}  # two on a line\n'
    assert _comments(src) == {"b": "the b", "k": "kay"}


def test_every_registered_setting_has_a_meaning():
    """Each setting of every method, baseline and evaluator gets its one-line meaning from the comment where
    it is declared (a config field or a `defaults` entry); none is left blank."""
    from unifybench.registry import BASELINES, EVALUATORS, METHODS
    from unifybench.settings import settings
    blank, seen = [], 0
    for registry in (METHODS, BASELINES, EVALUATORS):
        for name in registry.names():
            for s in settings(name):
                seen += 1
                if not s.meaning.strip() or "\n" in s.meaning:
                    blank.append(f"{name}.{s.name}")
    assert seen > 300 and not blank, blank


def test_ls_settings_shows_an_evaluator_meaning_declared_in_a_base_class(capsys):
    assert cli_main(["ls", "settings", "pope"]) == 0      # `data`, `limit` are ModelEvaluator's defaults
    lines = capsys.readouterr().out.splitlines()
    meaning_at = lines[1].rindex(" ") + 1                 # the last column under the dashes
    by_name = {r.split()[0]: r[meaning_at:] for r in lines[2:]}
    assert by_name["limit"] == "> 0: only the first N questions"
    assert by_name["headline"] == "the pooled figure reported as the value"
