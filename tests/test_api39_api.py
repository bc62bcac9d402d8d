"""Session 39 (api, apimend): the Python API's refusal of a config key that is no sampling
option (a misspelt field, ``max_tokens``, an argument of ``generate``, a key that is no
text), ``generate --prompt-file``'s lines (``files.text_lines``), and the tokens a run
returns (``n_tokens``, the server's usage) beside those it decodes (``decoded_tokens``,
which tokens/s counts)."""

from __future__ import annotations

import pytest

from unmask.errors import UserError


def test_a_misspelt_sampling_option_names_the_nearest_field():
    """``config={"gen_lenght": 8}`` said only "unknown sampling option 'gen_lenght' (the fields
    of SampleConfig)"; the command line names the flag a misspelt one is closest to, and so
    does the API now (any letter case too). A name close to none gets no guess."""
    from unmask.api import check_option_names

    with pytest.raises(UserError) as e:
        check_option_names({"gen_lenght": 8, "steps": 4})
    assert str(e.value) == ("unknown sampling option 'gen_lenght'; did you mean gen_length? "
                            "(the fields of SampleConfig)")
    with pytest.raises(UserError, match=r"^unknown sampling option 'Temperature'; did you "
                                        r"mean temperature\?"):
        check_option_names(["Temperature"])
    with pytest.raises(UserError) as e:
        check_option_names(["zzz"])
    assert str(e.value) == "unknown sampling option 'zzz' (the fields of SampleConfig)"
    check_option_names(["gen_length", "seed"])  # the fields themselves: nothing said


def test_a_config_key_that_is_an_argument_or_another_apis_length_says_where_it_goes():
    """``config={"stop": ["\\n"]}`` or ``{"n": 3}``: arguments of ``generate``, the likeliest
    thing to put in a config, said only "unknown sampling option 'stop'"; ``max_tokens``, the
    server's (OpenAI's) name of ``gen_length``, got no guess either."""
    from unmask.api import check_option_names

    with pytest.raises(UserError) as e:
        check_option_names({"stop": ["\n"]})
    assert str(e.value) == ("unknown sampling option 'stop'; stop= is an argument of generate "
                            "and chat, not a config option (the fields of SampleConfig)")
    with pytest.raises(UserError, match=r"^unknown sampling option 'n'; n= is an argument of "
                                        r"generate, not a config option"):
        check_option_names({"n": 3, "seed": 1})
    with pytest.raises(UserError, match=r"^unknown sampling option 'Stop'; stop= is an "):
        check_option_names({"Stop": ["\n"]})  # any letter case, as max_tokens below
    for name in ("max_tokens", "max_new_tokens", "Max_Tokens", "max-tokens"):
        with pytest.raises(UserError, match=rf"^unknown sampling option '{name}'; did you mean "
                                            r"gen_length\? \(the fields"):
            check_option_names([name])


def test_an_option_key_that_is_no_text_is_one_line():
    """A mapping with a key that is not a text beside one that is (``{1: 2, "x": 3}``) was a
    ``TypeError`` traceback from sorting the unknown names; now the usual one line."""
    from unmask.api import check_option_names

    with pytest.raises(UserError, match=r"^unknown sampling option 1 \(the fields"):
        check_option_names({1: 2, "x": 3})


def test_a_prompt_file_line_is_one_prompt_whatever_it_holds(tmp_path):
    """``unmask generate --prompt-file``: one prompt a line, lines ending at \\n, \\r\\n or \\r
    as a file holds them. ``str.splitlines`` also cut a line at a form feed (a page break in
    text taken from a PDF), U+0085 and U+2028: two lines made four prompts, and the refusals'
    "prompt on line N" counted the extra ones."""
    from unmask.cli import build_parser
    from unmask.commands.generate import _read_prompts

    path = tmp_path / "prompts.txt"
    path.write_text("In the beginning\fGod\r\nthe earth\x85was\n\nwithout\u2028form\rvoid",
                    encoding="utf-8", newline="")
    args = build_parser(["generate"]).parse_args(
        ["generate", "--model", "demo", "first", "--prompt-file", str(path)])
    prompts, names = _read_prompts(args)
    assert prompts == ["first", "In the beginning\fGod", "the earth\x85was",
                       "without\u2028form", "void"]
    assert names == ["prompt 1 of 5", *(f"prompt on line {n} of {path}" for n in (1, 2, 4, 5))]


def test_text_lines_ends_a_line_only_at_a_line_break():
    """Guard: ``unmask.files.text_lines``, the rule of the prompt file, task file, gap set and
    ``prepare --line-docs`` readers (the last three had it inline)."""
    from unmask.files import text_lines

    assert text_lines("a\fb\r\nc\u2028d\re\n") == ["a\fb", "c\u2028d", "e", ""]


def test_identical_greedy_rows_are_counted_decoded_once_and_returned_each():
    """``--n 3`` of a greedy run decodes one row and copies its text (``row_runs``), as the
    command's note says ("decoded once"); ``tokens_per_s`` counted all three rows, so the
    summary said 3 times the tokens/s the model decoded (demo: "24 tokens ... 179 tokens/s"
    where one row alone decodes at 67). ``n_tokens`` stays the tokens returned, every row's
    (the server's ``usage.completion_tokens`` for the same request); ``decoded_tokens``, what
    ``tokens_per_s`` counts, leaves the copies out. A sampled run decodes every row."""
    from server_helpers import loaded, random_transformer

    from unmask import api

    m = loaded(random_transformer(0))
    cfg = {"gen_length": 8, "steps": 8}
    one = api.generate(m, "ab", config=cfg)
    three = api.generate(m, ["ab", "cd", "ab"], config=cfg, n=3)
    alone = api.generate(m, "cd", config=cfg)
    assert three.texts[:3] == one.texts * 3 and three.texts[6:] == one.texts * 3
    assert three.n_tokens == 6 * one.n_tokens + 3 * alone.n_tokens  # every text returned
    assert three.decoded_tokens == one.n_tokens + alone.n_tokens  # each distinct row once
    assert three.copies == {1, 2, 4, 5, 6, 7, 8}
    assert three.tokens_per_s == three.decoded_tokens / three.seconds
    sampled = api.generate(m, "ab", config={**cfg, "temperature": 1.0, "seed": 1}, n=3)
    assert sampled.copies == frozenset()  # every row decoded, every row counted
    assert sampled.decoded_tokens == sampled.n_tokens


def test_n_tokens_is_the_servers_completion_tokens_for_the_same_request():
    """CLI = API = server: the server counts each choice (as OpenAI does), and so does
    ``n_tokens``; a greedy ``n=3`` of one prompt, where ``decoded_tokens`` is a third."""
    from fastapi.testclient import TestClient
    from server_helpers import loaded, random_transformer

    from unmask import api
    from unmask.server import create_app

    m = loaded(random_transformer(0))
    with TestClient(create_app(m, access_log=False)) as c:
        r = c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 8, "n": 3,
                                            "temperature": 0, "steps": 8})
    assert r.status_code == 200, r.text
    out = api.generate(m, "ab", config={"gen_length": 8, "steps": 8}, n=3)
    assert [ch["text"] for ch in r.json()["choices"]] == out.texts
    assert r.json()["usage"]["completion_tokens"] == out.n_tokens
    assert out.n_tokens == 3 * out.decoded_tokens


def test_generate_says_the_tokens_returned_and_those_decoded(tmp_path, capsys):
    """``unmask generate --n 3`` of a greedy run: ``--json``'s ``n_tokens`` counts every text
    (the server's usage), ``decoded_tokens`` the one row decoded, and the summary line says
    both, its tokens/s over the tokens decoded ("24 tokens (8 decoded: ...)"). A run with no
    copies says the one count."""
    import json

    import torch

    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, **tok.special_ids())
    torch.manual_seed(0)
    run = str(save_checkpoint(tmp_path, model=Transformer(cfg).eval(), tokenizer=tok))
    argv = ["generate", "--model", run, "ab", "--gen-length", "8", "--device", "cpu",
            "--no-live", "--n", "3"]
    assert main([*argv, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    one = got["n_tokens"] // 3
    assert got["n_tokens"] == 3 * one and got["decoded_tokens"] == one > 0
    counted = got["tokens_per_s"] * got["seconds"]  # (both rounded): the decoded, not all
    assert abs(counted - one) < abs(counted - 3 * one)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"{3 * one} tokens ({one} decoded: identical texts decoded once), 8 steps" in err
    assert main([*argv[:-2]]) == 0
    assert f"\n{one} tokens, 8 steps" in "\n" + capsys.readouterr().err
