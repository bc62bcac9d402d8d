"""The command line's front door (session 32): the steps note of ``demo`` and ``generate``
(one rule), the shipped model found from a zipped install, ``generate --stop``."""

import pytest
import torch

from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.files import asset_path
from unmask.model import Transformer
from unmask.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny model with the shipped demo tokenizer."""
    shipped = asset_path("demo") / "tokenizer.json"
    if not shipped.is_file():
        pytest.skip("demo checkpoint not bundled")
    tok = load_tokenizer(shipped)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, **tok.special_ids())
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ck")
    save_checkpoint(out, model=Transformer(cfg), tokenizer=tok)
    return out


NOTE = "8 steps for 4 masked tokens: a step past the last one commits nothing"


def test_demo_notes_steps_past_the_tokens_as_generate_does(tiny, capsys):
    """``unmask demo --steps 1000`` ran 1,000 forwards for 48 tokens without the note that
    ``unmask generate`` gives; the demo has no --skip-empty-steps, so it names the steps
    that waste none."""
    demo = ["demo", "--model", str(tiny), "--gen-length", "4", "--no-live", "--device", "cpu"]
    assert main([*demo, "--steps", "8"]) == 0
    err = capsys.readouterr().err
    assert f"unmask demo: note: {NOTE}" in err and "--steps 4 or fewer" in err
    assert main([*demo, "--steps", "4"]) == 0
    assert "note:" not in capsys.readouterr().err
    gen = ["generate", "x", "--model", str(tiny), "--gen-length", "4", "--no-live",
           "--device", "cpu"]
    assert main([*gen, "--steps", "8"]) == 0
    err = capsys.readouterr().err
    assert f"unmask generate: note: {NOTE}" in err and "--skip-empty-steps" in err
    assert main([*gen, "--steps", "8", "--skip-empty-steps"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_the_shipped_model_is_found_from_a_zipped_install(tmp_path):
    """The package imported from a zip (a zipapp, a wheel on ``sys.path``): ``--model demo``
    said "the demo checkpoint is not in this install; run unmask demo --train", since its
    files have no path of their own. Now they are copied out once into a cache folder keyed
    by the zip, which a later process reuses: each process copied the 11 MB again into a
    temporary folder, left there by a SIGKILL. A name with a folder in it is copied too (its
    folder was not made)."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    import unmask

    package = Path(unmask.__file__).parent
    if not (package / "assets" / "demo" / "model.safetensors").is_file():
        pytest.skip("demo checkpoint not bundled")
    zipped = tmp_path / "unmask.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_STORED) as z:
        for f in sorted(package.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                z.write(f, f.relative_to(package.parent).as_posix())
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import unmask\n"
        "assert unmask.__file__.startswith(sys.argv[1]), unmask.__file__\n"
        "from unmask.checkpoint import checkpoint_dir, shipped_model\n"
        "from unmask.files import asset_path\n"
        "from unmask.tokenizer import load_tokenizer\n"
        "p = shipped_model('demo')\n"
        "assert checkpoint_dir('demo') == checkpoint_dir(asset_path('demo')) == p\n"
        "load_tokenizer(asset_path('demo/tokenizer.json'))\n"
        "print(p)\n"
    )
    cache, tmp = tmp_path / "cache", tmp_path / "tmp"
    tmp.mkdir()
    env = {"PATH": "/usr/bin:/bin", "UNMASK_CACHE_DIR": str(cache), "TMPDIR": str(tmp)}

    def extract():
        done = subprocess.run([sys.executable, "-c", code, str(zipped)], capture_output=True,
                              text=True, cwd=tmp_path, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        extracted = Path(done.stdout.strip())
        assert extracted.name == "demo"
        return extracted

    copies = []
    for _ in range(2):
        extracted = extract()
        assert extracted.is_relative_to(cache / "assets")
        copies.append((extracted, (extracted / "model.safetensors").stat().st_ino))
    assert copies[0] == copies[1]  # the second process used the first one's copy
    assert not list(tmp.iterdir())  # no temporary folder, which a kill would leave
    assert [p.name for p in extracted.parent.iterdir()] == ["demo"]  # no staging left
    env["UNMASK_CACHE_DIR"] = "off"  # no disk cache: a copy for the process, gone at exit
    extracted = extract()
    assert extracted.is_relative_to(tmp) and not extracted.exists()


def test_generate_stop_ends_each_text_as_the_api_does(tiny, capsys):
    """``unmask generate --stop TEXT`` (repeatable) ends each text before the earliest stop
    found in it, by the rule of ``api.generate``'s and the server's ``stop``
    (``unmask.chat.cut_text``); ``--json``'s tokens stay what was decoded. The CLI had no
    such flag; an empty stop text is a one-line refusal, exit 2."""
    import json

    from unmask.chat import cut_text

    gen = ["generate", "x", "--model", str(tiny), "--gen-length", "24", "--no-live",
           "--device", "cpu", "--json"]
    assert main(gen) == 0
    whole = json.loads(capsys.readouterr().out)["results"][0]
    text = whole["text"]
    stops = [text[10:13], text[6:8]]  # the later-starting one given first
    assert main([*gen, "--stop", stops[0], f"--stop={stops[1]}"]) == 0
    cut = json.loads(capsys.readouterr().out)
    assert cut["results"][0]["text"] == cut_text(text, stops) == text[: text.index(stops[1])]
    assert cut["results"][0]["tokens"] == whole["tokens"] and cut["stop"] == stops
    assert main([*gen[:-1], "--stop", stops[1]]) == 0
    assert capsys.readouterr().out == "x" + text[: text.index(stops[1])] + "\n"
    with pytest.raises(SystemExit) as stopped:  # argparse's refusal, as the program exits
        main([*gen, "--stop", ""])
    assert stopped.value.code == 2
    assert "argument --stop: a stop text needs at least one character" in (
        capsys.readouterr().err)


def test_a_model_typed_without_model_is_named_in_the_refusal(tiny, tmp_path, monkeypatch,
                                                             capsys):
    """``unmask generate RUN "hi"`` (as ``unmask eval RUN`` takes it) said only that --model
    is required; now it says how the word it took for a prompt is given. A prompt that is
    no path (one too long to be a file name) keeps the plain refusal."""
    monkeypatch.chdir(tmp_path)  # no ./demo here
    for argv, hint in ((["generate", str(tiny), "hi"], f"--model {tiny})"),
                       (["infill", "Demo", "a [MASK] b"], "--model Demo)"),
                       (["generate", "x" * 5000], None)):
        with pytest.raises(SystemExit) as refused:
            main(argv)
        assert refused.value.code == 2
        err = capsys.readouterr().err
        assert "the following arguments are required: --model" in err
        assert (hint is None and "a model is given" not in err) or (
            f"(a model is given as {hint}" in err)


def test_a_long_flag_typed_with_one_dash_is_named(capsys):
    """``-n 3`` / ``-model demo`` (one dash, as other tools spell them) were "unrecognized
    arguments: -n" with no hint; the nearest-flag hint covered ``--`` words only."""
    assert main(["generate", "-model", "demo", "-n", "3", "hi"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: -model -n; did you mean --model and --n?" in err
    assert main(["generate", "--model", "demo", "-x", "hi"]) == 2  # no such long flag
    assert "unrecognized arguments: -x (see" in capsys.readouterr().err


def test_unmask_help_command_shows_the_commands_help(capsys):
    """``unmask help generate`` (as git and pip take it) was "unknown command 'help'"."""
    for argv, usage in ((["help", "generate"], "usage: unmask generate"),
                        (["help"], "usage: unmask [-h]")):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        assert capsys.readouterr().out.startswith(usage)
    assert main(["help", "genrate"]) == 2
    assert "unknown command 'genrate'; did you mean generate?" in capsys.readouterr().err
