"""Help that reads like a well-kept CLI's, each shared flag defined once, and a light
``--help`` path (no torch import)."""

import re
import subprocess
import sys

import pytest

from unmask.cli import build_parser
from unmask.commands import COMMANDS, SHARED_FLAGS, is_shared

RUNS_A_MODEL = {"train", "distill", "eval", "generate", "chat", "demo", "infill", "edit",
                "fill_form", "serve"}


def _subparsers():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices


def _options(p):
    return [a for a in p._actions if a.option_strings]


def test_every_command_is_registered():
    assert set(_subparsers()) == {name.replace("_", "-") for name in COMMANDS}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_is_plain_text(name):
    text = _subparsers()[name.replace("_", "-")].format_help()
    assert "``" not in text and not re.search(r"`[^`\s]+`", text), "reST markup in help"
    assert not re.search(r":(class|func|mod|meth|attr):", text)
    assert not re.search(r"\(default: (|None|\[\]|\{\})\)", text), "empty default shown"
    assert "None = " not in text


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_shared_flags_come_from_one_definition(name):
    p = _subparsers()[name.replace("_", "-")]
    for action in _options(p):
        shared = set(action.option_strings) & set(SHARED_FLAGS)
        if shared:
            assert is_shared(action), f"{name}: {shared} is defined by the command itself"
    flags = [s for a in _options(p) for s in a.option_strings]
    assert len(flags) == len(set(flags))


def test_shared_flags_read_the_same_everywhere():
    seen: dict[str, set[tuple]] = {}
    for p in _subparsers().values():
        for action in _options(p):
            for flag in set(action.option_strings) & {"--device", "--threads", "--no-live"}:
                seen.setdefault(flag, set()).add((action.help, action.metavar, action.type))
    assert seen and all(len(v) == 1 for v in seen.values()), seen


@pytest.mark.parametrize("name", sorted(RUNS_A_MODEL))
def test_every_command_that_runs_a_model_has_threads_and_device(name):
    p = _subparsers()[name.replace("_", "-")]
    flags = {s for a in _options(p) for s in a.option_strings}
    assert {"--threads", "--device"} <= flags


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_metavars_are_explicit(name):
    """Every flag that takes a value shows a chosen metavar (N, X, PATH, DIR, FILE, NAME,
    ...) or its choices, never argparse's upper-cased flag name."""
    p = _subparsers()[name.replace("_", "-")]
    for action in _options(p):
        if action.nargs == 0 or action.help == "==SUPPRESS==":
            continue
        assert action.metavar is not None or action.choices is not None, action.option_strings


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_registry_flags_name_every_entry(name):
    """Registry-valued flags are checked lazily (no torch on --help), so their help must
    name the choices itself; this keeps it true when a registry grows."""
    p = _subparsers()[name.replace("_", "-")]
    for action in _options(p):
        names = getattr(action.type, "registry_names", None)
        if names is None:
            continue
        for entry in names():
            assert entry in action.help, f"{action.option_strings}: {entry!r} not in help"


def test_registry_flag_rejects_unknown_names():
    with pytest.raises(SystemExit) as e:
        build_parser(["generate"]).parse_args(["generate", "--model", "m", "--policy", "nope"])
    assert e.value.code == 2


def _imports_torch(argv: list[str]) -> tuple[int, bool]:
    code = (
        "import sys\n"
        "from unmask.cli import main\n"
        "try:\n"
        f"    rc = main({argv!r})\n"
        "except SystemExit as e:\n"
        "    rc = e.code\n"
        "print(rc, 'torch' in sys.modules, file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    rc, torch = r.stderr.split()[-2:]
    return int(rc), torch == "True"


LIGHT = sorted(set(COMMANDS) - {"infill"})


@pytest.mark.parametrize("argv", [["--help"], ["nope"]] + [[c.replace("_", "-"), "--help"]
                                                           for c in LIGHT])
def test_help_does_not_import_torch(argv):
    rc, torch = _imports_torch(argv)
    assert rc in (0, 2) and not torch


def test_infill_help_does_not_import_torch():
    assert _imports_torch(["infill", "--help"]) == (0, False)


def test_the_infill_help_lists_every_character_class():
    from unmask.commands.infill import CHARSET_NAMES
    from unmask.infill.template import NAMED_CLASSES

    assert CHARSET_NAMES == tuple(NAMED_CLASSES)


def test_argument_error_does_not_import_torch():
    assert _imports_torch(["generate"]) == (2, False)  # --model is required
    assert _imports_torch(["train", "--steps", "many"]) == (2, False)


def test_help_text_and_defaults():
    from unmask.commands import help_text, with_default

    assert help_text("Use ``llada`` or `unmask chat`,\n  see :class:`SampleConfig`.") == (
        "Use llada or unmask chat, see SampleConfig")
    assert help_text("Block length; None = gen_length.") == "Block length; unset = gen_length"
    assert [with_default("x", d) for d in (None, "", {}, False)] == ["x"] * 4
    assert with_default("x", True) == "x (default: on)"
    assert with_default("x", 0) == "x (default: 0)"
    assert with_default("x (default: auto)", "auto") == "x (default: auto)"


def test_top_level_help_names_every_exit_status():
    """``unmask --help`` lists each status the program exits with (129, SIGHUP's, was left
    out though README.md and the signal handling have it)."""
    from unmask import cli

    text = " ".join(build_parser().format_help().split())
    statuses = {v for k, v in vars(cli).items() if k.startswith("EXIT_")}
    assert statuses == {2, 129, 130, 141, 143}
    for status in sorted(statuses | {0}):
        assert re.search(rf"\b{status} [a-z]", text), f"unmask --help does not say {status}"


def test_each_command_summary_is_the_one_unmask_help_lists():
    """``unmask --help`` lists COMMANDS' summaries without importing the commands; a command's
    own registration must say the same (convert's named only LLaDA and Dream)."""
    sub = next(a for a in build_parser()._actions
               if a.__class__.__name__ == "_SubParsersAction")  # fmt: skip
    for action in sub._choices_actions:
        assert action.help == COMMANDS[action.dest.replace("-", "_")], action.dest


def test_readme_lists_the_commands_that_take_threads():
    """README's "Every command" names the commands with --threads (it left out distill)."""
    from pathlib import Path

    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    listed = re.search(r"`--threads N` sets torch's CPU threads on every command that runs a "
                       r"model \(([^)]*)\)", readme)
    assert listed, "README.md no longer has the --threads sentence; update this test"
    named = {n.replace("-", "_") for n in re.findall(r"`([a-z-]+)`", listed.group(1))}
    have = {name for name, p in _subparsers().items()
            if any("--threads" in a.option_strings for a in _options(p))}  # fmt: skip
    assert named == {n.replace("-", "_") for n in have} == RUNS_A_MODEL


def test_demo_flags_take_the_metavars_of_generate():
    """A flag demo shares with generate reads alike in both usages (demo wrote
    --repetition-penalty R, generate X)."""
    def metavars(name):
        return {s: a.metavar for a in _options(_subparsers()[name]) for s in a.option_strings}

    demo, generate = metavars("demo"), metavars("generate")
    shared = set(demo) & set(generate)
    assert "--repetition-penalty" in shared
    assert {f: demo[f] for f in shared} == {f: generate[f] for f in shared}


def _help_of(command: str, flag: str) -> str:
    action = next(a for a in _options(_subparsers()[command]) if flag in a.option_strings)
    return " ".join(action.help.split())


@pytest.mark.parametrize("name", ["generate", "chat", "eval", "infill", "edit", "fill-form"])
def test_steps_help_states_the_default_the_command_takes(name):
    """``--steps`` said "The commands and the server default it to gen_length ...; 64 is the
    Python default (default: 64)": two defaults, and the appended one false where the command
    takes one step per token. Each command now states its own rule, once."""
    text = _help_of(name, "--steps")
    assert text.count("default") == 1, text
    if name in ("generate", "chat", "eval"):  # unmask.api.sample_config: one step per token
        assert text.endswith("(default: the checkpoint's recommended steps, else "
                             "--gen-length: one token per step)"), text
    else:  # the dataclass's 64, capped at the masks of the text (unmask.infill.fill)
        assert text.endswith("(default: 64, at most the number of masked tokens)"), text
    assert text.startswith("Total denoising steps")


def test_demo_steps_help_states_the_default_demo_takes():
    """``unmask demo --help`` said the steps default to the generation length; the demo runs a
    checkpoint's recommended steps where it has them (``api.sample_config``), as generate."""
    assert _help_of("demo", "--steps") == ("denoising steps (default: the checkpoint's "
                                           "recommended steps, else --gen-length: one token per "
                                           "step)")


def test_top_level_help_tells_a_new_user_where_to_start():
    """``unmask`` (or ``unmask --help``) listed twelve commands and no first step; it names
    the demo, which needs no network and no arguments."""
    text = " ".join(build_parser().format_help().split())
    assert "New here? 'unmask demo' shows the shipped demo model (no network" in text


def test_serve_flags_take_the_metavars_and_types_of_the_decoding_commands():
    """A flag serve shares with generate (or chat's --chat-template) shows the same
    placeholder and takes the same values: serve wrote --draft-threshold P (X elsewhere),
    --compile MODE (NAME), --chat-template TEMPLATE (FILE|NAME), and no metavar for
    --draft-cache and --predraft; its --draft-threshold took nan."""
    def flags(name):
        return {s: a for a in _options(_subparsers()[name]) for s in a.option_strings
                if a.nargs != 0 and s not in SHARED_FLAGS}

    serve, generate = flags("serve"), {**flags("chat"), **flags("generate")}
    shared = set(serve) & set(generate)
    assert {"--draft-threshold", "--compile", "--chat-template", "--predraft"} <= shared

    def reads(a):
        return a.metavar, tuple(a.choices or ()), getattr(a.type, "__name__", a.type)

    assert {f: reads(serve[f]) for f in shared} == {f: reads(generate[f]) for f in shared}


def test_distill_takes_trains_flags_as_train_shows_them():
    """A TrainConfig flag distill shares with train shows the same placeholder and takes the
    same values (distill wrote --parallel TEXT and --precision TEXT, no choices)."""
    def flags(name):
        return {s: a for a in _options(_subparsers()[name]) for s in a.option_strings
                if a.nargs != 0 and s not in SHARED_FLAGS}

    distill, train = flags("distill"), flags("train")
    shared = {"--parallel", "--precision"}
    assert shared <= set(distill) & set(train)

    def reads(a):
        return a.metavar, tuple(a.choices or ()), getattr(a.type, "__name__", a.type)

    assert {f: reads(distill[f]) for f in shared} == {f: reads(train[f]) for f in shared}
