"""A message's ``name`` reaches the model or is refused: a template that mentions ``name``
only elsewhere (``namespace()``, a tool call's ``name``, as Qwen2.5's and Llama 3's do)
rendered the message without it, silently."""

from __future__ import annotations

import pytest
from test_chat import DREAM_TEMPLATE

from unmask.chat import ChatTemplate
from unmask.errors import UserError

NAMED = [{"role": "user", "content": "hi", "name": "ann"}]


@pytest.mark.parametrize("source", [
    DREAM_TEMPLATE,  # "name" only in tool_call.name
    "{% set ns = namespace(n=0) %}{% for m in messages %}{{ m.content }}{% endfor %}",
])
def test_a_template_that_mentions_name_elsewhere_refuses_a_named_message(source):
    with pytest.raises(UserError, match=r"does not render message names: messages\[0\]"):
        ChatTemplate(source).render(NAMED)


def test_a_name_rendered_for_some_roles_only_is_refused_on_the_others():
    source = ("{% for m in messages %}{% if m.role == 'user' and m.name %}{{ m.name }}: "
              "{% endif %}{{ m.content }}\n{% endfor %}")
    t = ChatTemplate(source)
    assert t.render(NAMED) == "ann: hi\n"
    both = [*NAMED, {"role": "assistant", "content": "yo", "name": "bot"}]
    with pytest.raises(UserError, match=r"messages\[1\] has 'name'"):
        t.render(both)


def test_a_template_that_judges_a_name_reads_it():
    source = ("{% for m in messages %}{% if m.name and m.name != 'ann' %}"
              "{{ raise_exception('unknown speaker') }}{% endif %}{{ m.content }}{% endfor %}")
    assert ChatTemplate(source).render(NAMED) == "hi"

