"""Every option of every subcommand refuses bad values with one line that names it, exit status 2, no
traceback. The table is read from the parser itself, so a new subcommand or option is covered the day
it is added, or this file fails naming the option that has no typed value (gandist.cli_args)."""

import argparse
import subprocess
import sys

import pytest

from gandist import cli
from gandist.cli_args import ArgType, Float, Int, Names, Seeds, Text

PROBES = ["0", "-1", "x", ""]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _value_actions(sp: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments that take a value (flags and --help take none)."""
    return [a for a in sp._actions if a.nargs != 0 and not isinstance(a, argparse._HelpAction)]


def _label(action: argparse.Action) -> str:
    return action.option_strings[0] if action.option_strings else action.dest


def _cases() -> list[tuple[str, str]]:
    return [(name, _label(a)) for name, sp in _subparsers().items() for a in _value_actions(sp)]


def _refused(t: ArgType, probe: str) -> bool:
    """Whether `probe` lies outside the domain `t` declares: worked out here from the declared bounds,
    not by asking the type, so a type that accepts what it should refuse fails the test."""
    if probe.strip() == "":
        return True
    if isinstance(t, (Int, Float)):
        try:
            v = int(probe) if isinstance(t, Int) else float(probe)
        except ValueError:
            return True
        return (t.min is not None and v < t.min) or (t.max is not None and v > t.max)
    if isinstance(t, Seeds):
        try:
            seeds = [int(probe)]  # the probes are single values
        except ValueError:
            return True
        return len(seeds) < t.min_len or seeds[0] < 0
    if isinstance(t, (Names, Text)):
        return False  # any non-empty word is a name or a text
    raise AssertionError(f"no expectation for {type(t).__name__}: add it to _refused")


def _valid(action: argparse.Action) -> str:
    """A value the option accepts, to fill required arguments around the probed one."""
    if action.choices:
        return str(list(action.choices)[0])
    t = action.type
    if isinstance(t, (Int, Float)):
        return str(1 if t.min is None else t.min)
    if isinstance(t, Seeds):
        return ",".join(str(i) for i in range(max(t.min_len, 1)))
    return "fid" if isinstance(t, Names) else "x"


def _argv(name: str, sp: argparse.ArgumentParser, probed: argparse.Action, probe: str) -> list[str]:
    positionals, options = [], []
    for a in _value_actions(sp):
        if a is probed:
            value = probe
        elif (not a.option_strings and a.nargs not in ("?", "*")) or a.required:
            value = _valid(a)
        else:
            continue
        if a.option_strings:
            options += [a.option_strings[0], value]
        else:
            positionals.append(value)
    return [name, *positionals, *options]


def test_the_table_sees_every_subcommand():
    names = set(_subparsers())
    assert {"train", "generate", "interpolate", "arithmetic", "eval", "prepare", "health"} <= names
    assert len(_cases()) >= 25  # guards the enumeration itself


@pytest.mark.parametrize("name, option", _cases())
def test_option_refuses_bad_values_in_one_line(name, option, monkeypatch, capsys):
    sp = _subparsers()[name]
    (action,) = [a for a in _value_actions(sp) if _label(a) == option]
    if action.choices is not None:
        probes = [p for p in PROBES if p not in action.choices]
        refused = dict.fromkeys(probes, True)
    else:
        assert isinstance(action.type, ArgType), (
            f"gandist {name} {option} has no typed value: give it a type from gandist.cli_args "
            "(Int, Float, Seeds, Names, Text) or choices, so a bad value is one line naming it"
        )
        refused = {p: _refused(action.type, p) for p in PROBES}
    ran = []
    monkeypatch.setattr(cli, "COMMANDS", {k: (lambda args, k=k: ran.append(k) or 0) for k in cli.COMMANDS})
    for probe, expect_refusal in refused.items():
        argv = _argv(name, sp, action, probe)
        status = cli.main(argv)
        err = capsys.readouterr().err
        if expect_refusal:
            lines = err.strip().splitlines()
            assert status == 2, f"{argv}: exit {status}, expected 2"
            assert len(lines) == 1 and f"argument {option}" in lines[0], f"{argv}: stderr {err!r}"
            assert "Traceback" not in err
            assert not ran, f"{argv} reached the command"
        else:
            assert status == 0 and ran, f"{argv} refused a valid value: {err!r}"
        ran.clear()


@pytest.mark.parametrize(
    "argv, option",
    [
        (["generate", "RUN", "--n", "0"], "--n"),
        (["generate", "RUN", "--n", "-5"], "--n"),
        (["eval", "RUN", "--n", "1"], "--n"),
        (["interpolate", "RUN", "--steps", "0"], "--steps"),
        (["interpolate", "RUN", "--seeds", "a,b"], "--seeds"),
        (["arithmetic", "RUN", "--u", "1", "--v", "", "--w", "2"], "--v"),
        (["prepare", "SRC", "DST", "--resolution", "x"], "--resolution"),
        (["train", "--set", ""], "--set"),
        (["health", ""], "run_dir"),
    ],
)
def test_real_entry_point_prints_one_line(argv, option, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "gandist", *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and f"argument {option}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not list(tmp_path.iterdir())


def test_types_parse_and_refuse():
    assert Seeds()("1, 2,5-7") == [1, 2, 5, 6, 7]
    assert Names()(" fid , kid") == "fid,kid"
    assert Float(min=0.0)("0.5") == 0.5
    for t, bad in [
        (Seeds(), "7-5"),
        (Seeds(), "1,,2"),
        (Seeds(), "-3"),
        (Seeds(min_len=2), "4"),
        (Names(), "fid,"),
        (Float(min=0.0), "nan"),
        (Float(min=0.0), "inf"),
        (Float(min=0.0), "-0.1"),
        (Int(min=1, max=100), "101"),
        (Int(), "1.5"),
        (Text(), "  "),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            t(bad)


def test_missing_required_option_is_one_line(capsys):
    assert cli.main(["arithmetic", "RUN", "--u", "1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--v" in lines[0]
