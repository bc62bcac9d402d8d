"""The playground's number fields (session 36, onboard): a temperature or a threshold over
its field's max was refused as "temperature must be <= 2 (the server's --max-steps)", naming
a server flag that has nothing to do with it; the steps field still names --max-steps."""

from __future__ import annotations

# fixtures, and playwright's expect: skipped, as test_playground is, without a browser
from test_playground import base_url, browser, expect, page  # noqa: F401


def test_a_value_over_a_fields_max_is_refused_naming_only_its_own_bound(page):  # noqa: F811
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/v1/" in r.url else None)
    page.fill("#prompt", "Hi")
    page.fill("#temperature", "3")
    page.click("#go")
    expect(page.locator("#status")).to_have_text("temperature must be <= 2")
    page.fill("#temperature", "")
    page.select_option("#policy", "threshold")
    page.fill("#threshold", "1.5")
    page.click("#go")
    expect(page.locator("#status")).to_have_text("threshold must be <= 1")
    assert page.get_attribute("#status", "class") == "err" and not sent
