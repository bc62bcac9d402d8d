"""The one-rendering name check answers as a rendering per named message did: a role whose
names are truncated or judged no longer lets another role's dropped names through (each role is
probed alone, at most three renderings more, only when the first tells nothing of some names),
and a message whose text holds a probe string cannot decide it."""

from __future__ import annotations

import pytest

from unmask.chat import ChatTemplate
from unmask.errors import UserError

PAIR = [{"role": "user", "content": "hi", "name": "alice"},
        {"role": "assistant", "content": "yo", "name": "bot"}]
LOOP = "{% for m in messages %}"


@pytest.mark.parametrize(("user_part", "user_alone"), [
    ("{% if m.role == 'user' and m.name %}{{ m.name[:3] }}: {% endif %}", "ali: user: hi\n"),
    ("{% if m.role == 'user' and m.name not in ['alice'] %}{{ raise_exception('who?') }}"
     "{% endif %}", "user: hi\n"),
], ids=["truncated", "judged"])
def test_a_dropped_name_is_refused_beside_another_roles_unreadable_ones(user_part, user_alone):
    t = ChatTemplate(LOOP + user_part + "{{ m.role }}: {{ m.content }}\n{% endfor %}")
    with pytest.raises(UserError, match=r"messages\[1\] has 'name'"):
        t.render(PAIR)
    assert t.render(PAIR[:1]) == user_alone  # the user's own name is read


def test_probing_by_role_costs_at_most_three_renderings_more(monkeypatch):
    calls = []
    real = ChatTemplate._render
    monkeypatch.setattr(ChatTemplate, "_render",
                        lambda self, *a: calls.append(1) or real(self, *a))
    counted = ChatTemplate(LOOP + "{{ (m.name or '') | length }}: {{ m.content }}\n{% endfor %}")
    many = [{"role": ("system", "user", "assistant")[i % 3], "content": str(i), "name": "n"}
            for i in range(60)]
    counted.render(many)
    assert len(calls) == 1 + 1 + 3  # the text, every name probed, each role's probed


def test_a_name_written_otherwise_is_not_refused_beside_another_roles_printed_ones():
    t = ChatTemplate(LOOP + "{% if m.role == 'user' %}{{ m.name }}{% else %}"
                     "{{ (m.name or '') | length }}{% endif %}: {{ m.content }}\n{% endfor %}")
    assert t.render(PAIR) == "alice: hi\n3: yo\n"


def test_a_message_text_holding_a_probe_decides_nothing():
    text = [{**PAIR[0], "content": "see unmaskprobe1name"}, PAIR[1]]
    user_only = ChatTemplate(LOOP + "{{ m.role }}{% if m.role == 'user' %} ({{ m.name }})"
                             "{% endif %}: {{ m.content }}\n{% endfor %}")
    with pytest.raises(UserError, match=r"messages\[1\] has 'name'"):
        user_only.render(text)  # the assistant's name is dropped, whatever the text says
    counted = ChatTemplate(LOOP + "{{ (m.name or '') | length }}: {{ m.content }}\n{% endfor %}")
    assert counted.render(text) == "5: see unmaskprobe1name\n3: yo\n"  # every name is read


def test_a_name_equal_to_its_own_probe_is_not_taken_for_written():
    """The probe's stem avoids the names too (review rm8): a name ``unmaskprobe0name``
    written as its length rendered the same as its probe and was refused."""
    t = ChatTemplate("{% for m in messages %}{{ (m.name or '') | length }}: {{ m.content }}\n"
                     "{% endfor %}")
    t.render([{"role": "user", "content": "hi", "name": "unmaskprobe0name"}])
