"""Supervised fine-tuning: data reading and errors, chat template, the loss, and
`train --objective sft`.
"""

import json
import math
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from unmask.checkpoint import load, save_checkpoint
from unmask.config import TrainConfig, model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.objectives import ObjectiveOptions, get_objective, sft
from unmask.schedules import LinearSchedule
from unmask.sft import DEFAULT_CHAT_TEMPLATE, SFTData, chat_prompt, read_sft_jsonl, render_chat
from unmask.tokenizer import byte_tokenizer

PAIRS = [
    {"prompt": "2+2?", "response": "4"},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                  {"role": "assistant", "content": "hello there"}]},
    {"prompt": "capital of France?", "response": "Paris"},
]


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_reads_pairs_and_messages(tmp_path):
    ex = read_sft_jsonl(write_jsonl(tmp_path / "d.jsonl", PAIRS))
    assert len(ex) == 3
    assert ex[0].messages == [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    assert ex[1].messages[0]["role"] == "system"
    assert ex[2].source.endswith("d.jsonl:3")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"prompt": "x"}), "missing field(s) response"),
        (json.dumps({"prompt": "x", "response": "  "}), "empty response"),
        (
            json.dumps({"messages": [{"role": "user", "content": "x"}]}),
            "last message must be the assistant",
        ),
        (json.dumps({"messages": [{"role": "user"}]}), "needs 'role' and 'content'"),
        (json.dumps([1, 2]), "expected a JSON object"),
        (
            json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}),
            "a conversation needs a message before the assistant's response",
        ),
        (
            json.dumps({"messages": PAIRS[1]["messages"], "prompt": "x", "response": "y"}),
            "give 'messages' or 'prompt'/'response', not both",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": None},
                                     {"role": "assistant", "content": "y"}]}),
            "messages[0].content must be a string or a list of text parts "
            '[{"type": "text", "text": "..."}], not null',
        ),
        # an unpaired surrogate is valid JSON but no text: a TypeError from the tokenizer
        ('{"prompt": "a\\ud800", "response": "b"}',
         "'prompt' holds an unpaired surrogate (not valid UTF-8)"),
        ('{"messages": [{"role": "user", "content": "a"}, '
         '{"role": "assistant", "content": "b\\udfff"}]}',
         "messages[1].content holds an unpaired surrogate (not valid UTF-8)"),
        # a key no template sees was dropped and so not trained (TRL renders it)
        (json.dumps({"messages": [{"role": "user", "content": "a"},
                                  {"role": "assistant", "content": "b",
                                   "reasoning_content": "think"}]}),
         "messages[1] has key 'reasoning_content'; a message has role, content and an "
         "optional name"),
        (json.dumps({"messages": [{"role": "user", "content": "a", "nmae": "ann"},
                                  {"role": "assistant", "content": "b"}]}),
         "messages[0] has key 'nmae'"),
        (json.dumps({"prompt": "a", "completion": "b"}),
         "missing field(s) response (or give 'messages') (TRL's 'completion' is 'response' "
         "here)"),
        # OpenAI fine-tuning's weight: 0 or 1, on assistant messages, some turn trained
        (json.dumps({"messages": [{"role": "user", "content": "a", "weight": 1},
                                  {"role": "assistant", "content": "b"}]}),
         "messages[0] has a weight; only an assistant message has one"),
        (json.dumps({"messages": [{"role": "user", "content": "a"},
                                  {"role": "assistant", "content": "b", "weight": 0.5}]}),
         "messages[1].weight must be 0 or 1, not 0.5"),
        (json.dumps({"messages": [{"role": "user", "content": "a"},
                                  {"role": "assistant", "content": "b", "weight": 0}]}),
         "every assistant turn has weight 0; nothing to train"),
    ],
)
def test_bad_data_names_file_and_line(tmp_path, line, message):
    p = write_jsonl(tmp_path / "bad.jsonl", [PAIRS[0], line])
    with pytest.raises(UserError) as e:
        read_sft_jsonl(p)
    assert "bad.jsonl:2: " in str(e.value) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_default_template_splits_prompt_and_response():
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    prompt = chat_prompt(None, msgs[:1])
    assert prompt == "<|user|>\nhi\n<|assistant|>\n"
    assert render_chat(DEFAULT_CHAT_TEMPLATE, msgs, add_generation_prompt=False) == prompt + "yo"


@pytest.mark.parametrize(
    "template", ["{% for m in messages %}", "{{ messages[0].nope.x }}", "{{ 1 / 0 }}"]
)
def test_template_failure_is_one_line(template):
    with pytest.raises(UserError, match="chat template failed") as e:
        render_chat(template, [{"role": "user", "content": "x"}], add_generation_prompt=True)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("template", [
    "{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}",
    "no vars",
])
def test_a_template_that_drops_the_response_is_refused(tmp_path, template):
    """Every row's response would be EOS alone: the model learns to answer nothing."""
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    with pytest.raises(UserError, match=r"pairs\.jsonl:1: chat template t\.jinja renders the "
                       "conversation without the response's text"):
        SFTData(read_sft_jsonl(data), byte_tokenizer(), eos_id=2, chat_template=template,
                origin="chat template t.jinja")


def test_template_failure_names_the_line_and_the_template(tmp_path):
    """A template that fails on an example names the data line and the template's file."""
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    with pytest.raises(UserError) as e:
        SFTData(read_sft_jsonl(data), byte_tokenizer(), eos_id=2,
                chat_template="{{ messages[0].nope.x }}", origin="chat template t.jinja")
    assert str(e.value).startswith(f"{data}:1: chat template t.jinja failed to render: ")


def test_a_name_the_template_does_not_render_is_refused(tmp_path):
    row = {"messages": [{"role": "user", "content": "hi", "name": "ann"},
                        {"role": "assistant", "content": "yo"}]}
    data = write_jsonl(tmp_path / "d.jsonl", [row])
    with pytest.raises(UserError, match=r"d\.jsonl:1: chat template does not render message "
                       r"names: messages\[0\] has 'name'"):
        SFTData(read_sft_jsonl(data), byte_tokenizer(), eos_id=2, chat_template=None)
    named = "{% for m in messages %}{{ m.name or m.role }}: {{ m.content }}\n{% endfor %}"
    rows = SFTData(read_sft_jsonl(data), byte_tokenizer(), eos_id=2, chat_template=named).rows
    assert byte_tokenizer().decode(rows[0][0]) == "ann: hi\n"


def test_special_token_text_in_data_is_plain_text(tmp_path):
    """``[EOS]`` typed in a response is five characters, not EOS mid-answer (it trained the
    model to stop there); only the template's own ``eos_token`` is the token."""
    tok = byte_tokenizer()
    template = ("{% for m in messages %}{{ m.content }}{% if m.role == 'user' %}{{ eos_token }}"
                "{% endif %}{% endfor %}")
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "say [EOS] [BOS]",
                                               "response": "ok [EOS] [MASK] done"}])
    prompt, response = SFTData(read_sft_jsonl(data), tok, eos_id=tok.eos_id,
                               chat_template=template).rows[0]
    assert prompt == tok.encode("say [EOS] [BOS]") + [tok.eos_id]
    assert response == tok.encode("ok [EOS] [MASK] done") + [tok.eos_id]
    assert not set(prompt[:-1] + response[:-1]) & set(tok.special_ids().values())


def test_batch_prompt_mask_and_eos_padding(tmp_path):
    tok = byte_tokenizer()
    data = SFTData(
        read_sft_jsonl(write_jsonl(tmp_path / "d.jsonl", PAIRS)),
        tok,
        eos_id=tok.eos_id,
        chat_template=None,
    )
    x0, pm = data.batch([0, 2], seq_len=64)
    p0 = tok.encode("<|user|>\n2+2?\n<|assistant|>\n")
    assert pm[0].sum() == len(p0) and torch.equal(x0[0, : len(p0)], torch.tensor(p0))
    r0 = x0[0, len(p0) :]
    assert r0[0] == tok.encode("4")[0] and bool(
        (r0[1:] == tok.eos_id).all()
    )  # EOS-padded to the batch length
    assert x0.shape[1] == max(len(p) + len(r) for p, r in (data.rows[0], data.rows[2]))
    with pytest.raises(UserError, match="no room for the response"):
        data.batch([2], seq_len=10)


class Uniform(torch.nn.Module):
    def __init__(self, V):
        super().__init__()
        self.V = V
        self.seen = None

    def forward(self, x, attention_mask=None):
        self.seen = x.clone()
        return torch.zeros(*x.shape, self.V, requires_grad=True)


def test_loss_never_masks_prompt_and_is_normalised_by_answer_length():
    V = 40
    cfg = model_preset("tiny", vocab_size=V)
    x0 = torch.randint(4, V, (3, 12))
    pm = torch.zeros(3, 12, dtype=torch.bool)
    pm[0, :2], pm[1, :7], pm[2, :10] = True, True, True  # answers of 10, 5, 2 tokens
    model = Uniform(V)
    opts = ObjectiveOptions(schedule=LinearSchedule(0.0))
    parts = sft(
        model,
        cfg,
        x0,
        attention_mask=None,
        generator=torch.Generator().manual_seed(0),
        options=opts,
        prompt_mask=pm,
        t=torch.ones(3),
    )
    assert torch.equal(model.seen[pm], x0[pm])  # the prompt is never masked
    assert bool((model.seen[~pm] == cfg.mask_id).all())  # t = 1: the whole answer is
    # every row contributes log V whatever its answer length; n_tokens counts rows
    assert int(parts.n_tokens) == 3
    assert float(parts.loss_sum.detach()) / 3 == pytest.approx(math.log(V), rel=1e-6)
    assert get_objective("sft") is sft
    with pytest.raises(UserError, match="prompt_mask"):
        sft(model, cfg, x0, attention_mask=None, generator=torch.Generator(), options=opts)


def test_train_sft_from_init(tmp_path):
    from unmask.train import train

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids())
    torch.manual_seed(0)
    base = Transformer(cfg)
    save_checkpoint(tmp_path / "base", model=base, tokenizer=tok)
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    tc = TrainConfig(
        data=str(data),
        out=str(tmp_path / "sft"),
        objective="sft",
        init=str(tmp_path / "base"),
        seq_len=64,
        batch_size=4,
        steps=2,
        warmup=0,
        lr=0.0,
        weight_decay=0.0,
        eval_every=0,
        save_every=0,
        log_every=1,
        ema=0.0,
    )
    run = train(tc, progress=False)
    loaded = load(run)
    assert loaded.config.chat_template == DEFAULT_CHAT_TEMPLATE  # stored with the checkpoint
    w = load_file(str(run / "checkpoint" / "model.safetensors"))
    torch.testing.assert_close(
        w["embed.weight"], base.embed.weight.detach()
    )  # lr 0: still the init weights
    losses = [
        json.loads(x)["loss"]
        for x in (run / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in x
    ]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    with pytest.raises(UserError, match="--init"):
        train(TrainConfig(data=str(data), out=str(tmp_path / "x"), objective="sft"), progress=False)
    # --chat-template takes what chat --template takes: a built-in name, a file, Jinja text
    # (the name or path was used as the template's text: "plain" rendered no messages)
    from unmask.chat import PLAIN_CHAT_TEMPLATE

    (tmp_path / "t.jinja").write_text(PLAIN_CHAT_TEMPLATE)
    for value, name in (("plain", "p"), (str(tmp_path / "t.jinja"), "f")):
        run = train(replace(tc, out=str(tmp_path / name), chat_template=value), progress=False)
        assert load(run).config.chat_template == PLAIN_CHAT_TEMPLATE
    with pytest.raises(UserError, match="^--chat-template 'nope': no such file, not a built-in"):
        train(replace(tc, out=str(tmp_path / "n"), chat_template="nope"), progress=False)
    # SFT pairs have no validation split: --keep-best would keep nothing (it was accepted)
    with pytest.raises(UserError, match="^--keep-best keeps the checkpoint of the best "
                       "validation score; objective 'sft' trains on .*no validation split$"):
        train(replace(tc, out=str(tmp_path / "kb"), keep_best=True), progress=False)
    assert not (tmp_path / "kb").exists()


def test_prompt_tokens_get_no_loss_in_a_real_model(tmp_path):
    """On a tiny Transformer and real SFT batches (a multi-turn conversation among them): the
    loss's gradient reaches the logits of answer positions only (the response and its EOS
    padding), never a prompt position, earlier assistant turns included."""
    tok = byte_tokenizer()
    rows = [*PAIRS, {"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "b"}, {"role": "assistant", "content": "second"}]}]
    data = SFTData(read_sft_jsonl(write_jsonl(tmp_path / "d.jsonl", rows)), tok,
                   eos_id=tok.eos_id, chat_template=None)
    x0, pm = data.batch([0, 1, 2, data.turns[3][-1]], seq_len=96)  # its last turn
    assert bool(pm[3, : len(tok.encode("<|user|>\na\n<|assistant|>\nfirst answer"))].all())
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=128, **tok.special_ids())
    torch.manual_seed(0)
    net = Transformer(cfg)
    kept: dict[str, torch.Tensor] = {}

    class Spy(torch.nn.Module):
        def forward(self, x, attention_mask=None):
            out = net(x, attention_mask=attention_mask)
            out.retain_grad()
            kept["logits"] = out
            return out

    opts = ObjectiveOptions(schedule=LinearSchedule(0.0))
    parts = sft(Spy(), cfg, x0, attention_mask=None, generator=torch.Generator().manual_seed(1),
                options=opts, prompt_mask=pm, t=torch.full((4,), 0.9))
    parts.loss_sum.backward()
    grad = kept["logits"].grad.abs().sum(-1)  # (B, L)
    assert float(grad[pm].max()) == 0.0  # no prompt position is trained
    for b in range(4):  # every row trains some answer position
        assert float(grad[b][~pm[b]].max()) > 0.0


@pytest.mark.parametrize("objective", ["mdlm", "ar", "bd3lm"])
def test_a_chat_template_for_another_objective_is_refused(objective, tmp_path):
    """--chat-template is the SFT template; another objective ignored it silently (the model
    stored none), so a user who meant to fine-tune for chat got a model without a template."""
    from unmask.cli import main
    from unmask.train import train

    blocks = ["--block-size", "4"] if objective == "bd3lm" else []
    cfg = TrainConfig(data=str(tmp_path / "none"), out=str(tmp_path / "o"), objective=objective,
                      block_size=4 if blocks else None, seq_len=16, chat_template="plain")
    with pytest.raises(UserError, match=f"^chat_template applies to objective 'sft', not "
                       f"'{objective}'$"):
        train(cfg, progress=False)
    assert not (tmp_path / "o").exists()
    assert main(["train", "--objective", objective, "--data", str(tmp_path / "none"), "--out",
                 str(tmp_path / "o"), "--chat-template", "plain", *blocks,
                 "--seq-len", "16"]) == 2


def test_every_assistant_turn_of_a_conversation_is_trained(tmp_path):
    """LLaDA App. B.1: an n-turn dialogue is n single-turn pairs (turn i's prompt is every
    turn before it) and one of them is drawn. Only the last turn was trained: the earlier
    answers were prompt, never masked, so multi-turn data taught one answer per line."""
    tok = byte_tokenizer()
    rows = [
        {"messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": ""},
            {"role": "user", "content": "q3"}, {"role": "assistant", "content": "a3"}]},
        {"prompt": "p", "response": "r"},
    ]
    data = SFTData(read_sft_jsonl(write_jsonl(tmp_path / "d.jsonl", rows)), tok,
                   eos_id=tok.eos_id, chat_template=None)
    assert len(data) == 2 and data.turns == [[0, 1], [2]]  # the empty answer is not trained
    msgs = rows[0]["messages"]
    assert data.rows[0][0] == tok.encode(chat_prompt(None, msgs[:2]))
    assert tok.decode(data.rows[0][1][:-1]).startswith("a1")
    assert data.rows[1][0] == tok.encode(chat_prompt(None, msgs[:6]))
    assert tok.decode(data.rows[1][1][:-1]) == "a3"
    assert data.sources == [f"{tmp_path / 'd.jsonl'}:1 (assistant turn 1 of 2)",
                            f"{tmp_path / 'd.jsonl'}:1", f"{tmp_path / 'd.jsonl'}:2"]
    # draws: the conversation uniformly, then one of its turns uniformly
    gen = torch.Generator().manual_seed(0)
    first = data.rows[0][0] + data.rows[0][1]
    last = data.rows[1][0] + data.rows[1][1]
    seen = {"first": 0, "last": 0, "pair": 0}
    for _ in range(60):
        x0, pm = data.sample(4, 256, gen)
        for b in range(4):
            n = int(pm[b].sum())
            row = x0[b].tolist()
            if row[: len(first)] == first and n == len(data.rows[0][0]):
                seen["first"] += 1
            elif row[: len(last)] == last and n == len(data.rows[1][0]):
                seen["last"] += 1
            else:
                seen["pair"] += 1
    assert seen["first"] > 30 and seen["last"] > 30 and seen["pair"] > 90  # 60, 60, 120 expected
    # single-turn data draws exactly as before (one randint, no second draw)
    single = SFTData(read_sft_jsonl(write_jsonl(tmp_path / "p.jsonl", PAIRS)), tok,
                     eos_id=tok.eos_id, chat_template=None)
    idx = torch.randint(0, 3, (5,), generator=torch.Generator().manual_seed(3)).tolist()
    x_old, _ = single.batch(idx, 64)
    x_new, _ = single.sample(5, 64, torch.Generator().manual_seed(3))
    assert torch.equal(x_old, x_new)


def test_empty_keys_of_an_export_are_absent_and_weight_0_turns_are_not_trained(tmp_path):
    """Datasets exported from Hugging Face carry ``"tool_calls": null`` (and ``"name":
    null``) on every message, and OpenAI fine-tuning data ``"weight": 0|1`` on assistant
    messages: every such line was refused. A null, empty-list or empty-string key is now
    absent; a turn of weight 0 is not trained (it stays in the prompt of the next one)."""
    tok = byte_tokenizer()
    msgs = [{"role": "user", "content": "q1", "tool_calls": None, "name": None},
            {"role": "assistant", "content": "a1", "weight": 0, "tool_calls": []},
            {"role": "user", "content": "q2", "name": ""},
            {"role": "assistant", "content": "a2", "weight": 1, "reasoning_content": None}]
    ex = read_sft_jsonl(write_jsonl(tmp_path / "d.jsonl", [{"messages": msgs}]))
    clean = [{"role": m["role"], "content": m["content"]} for m in msgs]
    assert ex[0].messages == clean
    data = SFTData(ex, tok, eos_id=tok.eos_id, chat_template=None)
    assert data.turns == [[0]] and data.sources == [f"{tmp_path / 'd.jsonl'}:1"]
    assert data.rows[0][0] == tok.encode(chat_prompt(None, clean[:3]))  # a1 is prompt
    assert tok.decode(data.rows[0][1][:-1]) == "a2"
    msgs[1]["weight"], msgs[3]["weight"] = 1, 0  # the last turn untrained, the first trained
    data = SFTData(read_sft_jsonl(write_jsonl(tmp_path / "e.jsonl", [{"messages": msgs}])),
                   tok, eos_id=tok.eos_id, chat_template=None)
    assert [tok.decode(r[1][:-1]) for r in data.rows] == ["a1"]
    assert data.rows[0][0] == tok.encode(chat_prompt(None, clean[:1]))


def test_validation_flags_on_a_run_without_a_validation_split_are_refused(tmp_path, capsys):
    """SFT pairs have no validation split: --eval-every N was ignored without a word (as
    --keep-best was); one line now, before anything is written. --eval-every 0 is what such
    a run does anyway, and stays accepted."""
    from unmask.cli import main

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "hi", "response": "there"}) + "\n")
    out = tmp_path / "run"
    assert main(["train", "--objective", "sft", "--data", str(pairs), "--out", str(out),
                 "--eval-every", "5"]) == 2
    err = capsys.readouterr().err
    assert err == ("unmask train: error: --eval-every 5 validates a run; objective 'sft' trains "
                   f"on {pairs}, which has no validation split; give --eval-every 0\n"), err
    assert not out.exists()
    assert main(["train", "--objective", "sft", "--data", str(pairs), "--out", str(out),
                 "--eval-every", "0"]) == 2  # refused further on, for its missing --init
    assert "--eval-every" not in capsys.readouterr().err


def test_sft_rows_are_the_prompts_unmask_chat_sends(tmp_path):
    """An imported LLaDA folder (its template writes ``bos_token`` and special markers): every
    trained turn's prompt ids are what ``api.chat_template(m).prompt`` (``unmask chat``, the
    server) encodes for the turns before it, BOS once; the response runs to the end-of-turn
    marker, where a reply is cut (``chat_prompt`` renders no BOS: text only)."""
    from test_chat import _llada_folder

    import unmask
    from unmask import api

    m = unmask.load(_llada_folder(tmp_path))
    tok = m.tokenizer
    msgs = [{"role": "user", "content": "w1"}, {"role": "assistant", "content": "w2 w3"},
            {"role": "user", "content": "w4"}, {"role": "assistant", "content": "w5"}]
    data = SFTData(read_sft_jsonl(write_jsonl(tmp_path / "d.jsonl", [{"messages": msgs}])),
                   tok, eos_id=m.config.eos_id, chat_template=m.config.chat_template)
    template = api.chat_template(m)
    eot = tok.token_to_id("<|eot_id|>")
    for (prompt, response), end in zip(data.rows, (1, 3), strict=True):
        assert prompt == template.prompt(tok, msgs[:end])[1]
        assert prompt.count(m.config.bos_id) == 1 and prompt[0] == m.config.bos_id
        assert template.reply(tok, response, m.config.eos_id) == msgs[end]["content"]
        assert response[len(tok.encode(msgs[end]["content"]))] == eot
    assert not chat_prompt(m.config.chat_template, msgs[:1]).startswith("<|startoftext|>")


@pytest.mark.parametrize("scheme", ["first", "always", "never"])
def test_an_example_is_the_conversation_transformers_encodes(scheme):
    """Prompt ids + response ids of an SFT example are the ids ``apply_chat_template`` gives
    the whole conversation, on a SentencePiece tokenizer too: the response was encoded as the
    start of a text, so with ``prepend_scheme="first"`` it began with a word-start mark it
    never has after the prompt (``▁hi`` after ``assistant\n``)."""
    transformers = pytest.importorskip("transformers")
    from test_chat import metaspace_tokenizer

    from unmask.chat import ChatTemplate

    tok = metaspace_tokenizer(scheme)
    ref = transformers.PreTrainedTokenizerFast(tokenizer_object=tok.hf, bos_token="<s>",
                                               eos_token="</s>")
    chatml = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>"
              "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    talk = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi yo"}]
    for source in (chatml, DEFAULT_CHAT_TEMPLATE):
        prompt, response = ChatTemplate(source).example(tok, talk)
        want = ref.apply_chat_template(talk, chat_template=source, tokenize=True,
                                       return_dict=False)
        assert prompt + response == list(want)
        assert prompt == list(ref.apply_chat_template(talk[:1], chat_template=source,
                                                      tokenize=True, return_dict=False,
                                                      add_generation_prompt=True))


def test_a_template_that_always_appends_the_assistant_header_trains_no_header(tmp_path):
    """LLaDA-8B-Instruct's template appends ``<|start_header_id|>assistant<|end_header_id|>``
    whatever ``add_generation_prompt`` says, so the rest of the conversation after the prompt
    ended with a new assistant header, and every response was trained as ``answer<|eot_id|>``
    + header + EOS. Now each trained turn is what ``transformers`` marks as the assistant's
    (``return_assistant_tokens_mask``, the mask TRL's ``assistant_only_loss`` trains) with the
    same template's ``{% generation %}`` form: the answer and its ``<|eot_id|>``, then EOS."""
    transformers = pytest.importorskip("transformers")
    from test_chat import LLADA_TEMPLATE, _llada_folder

    import unmask

    m = unmask.load(_llada_folder(tmp_path))
    tok = m.tokenizer
    msgs = [{"role": "user", "content": "w1"}, {"role": "assistant", "content": "w2 w3"},
            {"role": "user", "content": "w4"}, {"role": "assistant", "content": "w5 "}]
    data = SFTData(read_sft_jsonl(write_jsonl(tmp_path / "d.jsonl", [{"messages": msgs}])),
                   tok, eos_id=m.config.eos_id, chat_template=m.config.chat_template)
    marked = LLADA_TEMPLATE.replace(  # the assistant's content and end of turn, marked
        "{{ content }}",
        "{% if message['role'] == 'assistant' %}{{ content.split('<|end_header_id|>\n\n')[0] }}"
        "{{ '<|end_header_id|>\n\n' }}{% generation %}"
        "{{ content.split('<|end_header_id|>\n\n')[1] }}{% endgeneration %}"
        "{% else %}{{ content }}{% endif %}")
    ref = transformers.PreTrainedTokenizerFast(tokenizer_object=tok.hf,
                                               bos_token="<|startoftext|>",
                                               eos_token="<|endoftext|>")
    out = ref.apply_chat_template(msgs, chat_template=marked, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert ref.apply_chat_template(msgs, chat_template=LLADA_TEMPLATE, return_dict=False) == ids
    spans, start = [], None  # the assistant turns transformers marks, in order
    for i, bit in enumerate([*mask, 0]):
        if bit and start is None:
            start = i
        if not bit and start is not None:
            spans.append((start, i))
            start = None
    assert len(spans) == 2
    header = [tok.token_to_id("<|start_header_id|>"), tok.token_to_id("<|end_header_id|>")]
    for (prompt, response), (a, b) in zip(data.rows, spans, strict=True):
        assert prompt == ids[:a]
        assert response == ids[a:b] + [m.config.eos_id]
        assert not set(header) & set(response)


@pytest.mark.parametrize("flag", ["", "{% if add_generation_prompt %}", "{% if true %}"])
def test_a_plain_text_header_appended_after_every_conversation_is_not_trained(flag):
    """A template without special tokens that appends its ``Assistant:`` line after every
    conversation: the response is the answer alone (EOS then ends it), as with a template
    that appends it only for the generation prompt."""
    from unmask.chat import ChatTemplate

    source = ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
              + (flag + "assistant:" + ("{% endif %}" if flag else "")))
    tok = byte_tokenizer()
    talk = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    prompt, response = ChatTemplate(source).example(tok, talk)
    assert tok.decode(prompt) == "user: hi\nassistant:"
    want = " hello\n" if "add_generation_prompt" in flag else " hello"
    assert tok.decode(response) == want


def test_role_order_is_the_templates_call_as_in_transformers(tmp_path):
    """Two user turns in a row (or a late system message) are rendered as the template
    renders them, as ``apply_chat_template`` and TRL do; a template that wants alternation
    refuses them with its own message, naming the line. Fields of a line other than the
    example's (an ``id``) are ignored, as TRL drops unused columns."""
    twice = {"id": 7, "messages": [{"role": "user", "content": "a"},
                                   {"role": "user", "content": "b"},
                                   {"role": "assistant", "content": "c"}]}
    p = write_jsonl(tmp_path / "d.jsonl", [PAIRS[0], twice])
    tok = byte_tokenizer()
    data = SFTData(read_sft_jsonl(p), tok, eos_id=tok.eos_id, chat_template=None)
    prompt, response = data.rows[1]
    assert tok.decode(prompt) == "<|user|>\na\n<|user|>\nb\n<|assistant|>\n"
    assert response == tok.encode("c") + [tok.eos_id]
    alternating = ("{% for m in messages %}{% if loop.index0 > 0 and m.role == "
                   "messages[loop.index0 - 1].role %}{{ raise_exception('Conversation roles "
                   "must alternate') }}{% endif %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
                   "{% if add_generation_prompt %}assistant:{% endif %}")
    with pytest.raises(UserError) as e:
        SFTData(read_sft_jsonl(p), tok, eos_id=tok.eos_id, chat_template=alternating,
                origin="chat template t.jinja")
    assert str(e.value) == (f"{p}:2: chat template t.jinja failed to render: the template "
                            "rejected these messages: Conversation roles must alternate")


def test_a_template_that_refuses_a_generation_prompt_after_an_answer_still_trains():
    """The check for a template that ignores ``add_generation_prompt`` renders the whole
    conversation with it; a template that refuses that (its ``raise_exception``) is one that
    honours the flag, and its examples are split as before."""
    from unmask.chat import ChatTemplate

    source = ("{% if add_generation_prompt and messages[-1].role == 'assistant' %}"
              "{{ raise_exception('no generation prompt after an assistant turn') }}{% endif %}"
              + DEFAULT_CHAT_TEMPLATE)
    tok = byte_tokenizer()
    talk = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    prompt, response = ChatTemplate(source).example(tok, talk)
    assert tok.decode(prompt) == "<|user|>\nhi\n<|assistant|>\n" and tok.decode(response) == "yo"


def test_validation_flags_on_the_resume_of_a_run_without_a_validation_split_are_refused(
        tmp_path, capsys):
    """``unmask train --resume --eval-every N`` of an SFT run was accepted, announced as a
    change of plan ("--eval-every 5 given") and saved, and validated nothing: refused in one
    line, as on a new run, the run left as it was."""
    from unmask.cli import main

    tok = byte_tokenizer()
    torch.manual_seed(0)
    base = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids()))
    save_checkpoint(tmp_path / "base", model=base, tokenizer=tok)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "run"
    assert main(["train", "--objective", "sft", "--data", str(pairs), "--out", str(out),
                 "--init", str(tmp_path / "base"), "--seq-len", "64", "--batch-size", "2",
                 "--steps", "1", "--eval-every", "0", "--no-progress"]) == 0
    plan = (out / "train_config.json").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--steps", "2", "--eval-every", "5",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == ("unmask train: error: --eval-every 5 validates a run; objective 'sft' trains "
                   f"on {pairs}, which has no validation split; give --eval-every 0\n"), err
    assert (out / "train_config.json").read_text() == plan
