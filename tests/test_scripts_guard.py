"""Reply scripts (templates per language) and the reply guard (links, internal notes, terms)."""

from __future__ import annotations

import random
import time
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supportflow.errors import ReplyBlocked, ValidationError
from supportflow.model import Customer, Message, RecipientRole, Ticket
from supportflow.notify import (
    BUILTIN_TEMPLATES,
    Finding,
    MissingTemplateField,
    ReplyGuard,
    ReplyPolicy,
    ReplyScripts,
)
from supportflow.notify.guard import _copied_runs

AT = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def _ticket(
    *,
    name: str = "Wang Fang",
    language: str = "zh",
    messages: tuple[Message, ...] = (),
    **changes: Any,
) -> Ticket:
    values: dict[str, Any] = {
        "id": "t-7",
        "number": 1042,
        "subject": "Refund not received",
        "description": "...",
        "customer": Customer("c-1", name=name, language=language),
        "channel": "email",
        "status": "open",
        "created_at": AT,
        "updated_at": AT,
        "messages": messages,
    }
    values.update(changes)
    return Ticket(**values)


def _note(body: str, *, public: bool = False, id: str = "m-1") -> Message:
    return Message(id=id, author="agent_li", role="agent", body=body, at=AT, public=public)


# -- reply scripts -------------------------------------------------------------------------
class TestScripts:
    def test_customer_language_picks_the_template(self) -> None:
        scripts = ReplyScripts()
        assert scripts.render("greeting", _ticket(language="zh")) == "Wang Fang，您好！"
        assert scripts.render("greeting", _ticket(language="en")) == "Hello Wang Fang,"

    def test_language_tags_and_fallback(self) -> None:
        scripts = ReplyScripts()
        assert scripts.render("greeting", _ticket(language="zh-CN")).endswith("您好！")
        assert scripts.render("greeting", _ticket(language="zh_Hans")).endswith("您好！")
        assert scripts.render("greeting", _ticket(language="fr")) == "Hello Wang Fang,"
        assert scripts.render("greeting", _ticket(language="")) == "Hello Wang Fang,"
        zh_default = ReplyScripts(default_language="zh")
        assert zh_default.render("greeting", _ticket(language="fr")).endswith("您好！")

    def test_explicit_language_wins(self) -> None:
        text = ReplyScripts().render("greeting", _ticket(language="zh"), language="en")
        assert text == "Hello Wang Fang,"

    def test_fields_come_from_ticket_and_extras(self) -> None:
        ticket = _ticket(language="en", resolution="The refund was sent on 5 January.")
        text = ReplyScripts().render("resolution", ticket)
        assert text == (
            "Good news: ticket #1042 (Refund not received) is resolved. "
            "The refund was sent on 5 January."
        )
        closing = ReplyScripts().render("closing", ticket, agent_name="Li Lei")
        assert closing.endswith("Best regards,\nLi Lei")
        overridden = ReplyScripts().render("greeting", ticket, customer_name="Ms Wang")
        assert overridden == "Hello Ms Wang,"

    def test_missing_field_names_template_language_and_field(self) -> None:
        with pytest.raises(MissingTemplateField) as caught:
            ReplyScripts().render("closing", _ticket(language="zh"))
        error = caught.value
        assert isinstance(error, ValidationError)
        assert (error.template, error.language, error.field) == ("closing", "zh", "agent_name")
        message = str(error)
        assert "agent_name" in message
        assert "'closing'" in message
        assert "'zh'" in message

    def test_blank_values_are_missing_not_silent(self) -> None:
        with pytest.raises(MissingTemplateField, match="customer_name"):
            ReplyScripts().render("greeting", _ticket(name=""))
        with pytest.raises(MissingTemplateField, match="resolution"):
            ReplyScripts().render("resolution", _ticket())  # ticket.resolution is None
        with pytest.raises(MissingTemplateField, match="agent_name"):
            ReplyScripts().render("closing", _ticket(), agent_name=None)

    def test_compose_in_one_language(self) -> None:
        text = ReplyScripts().compose(
            _ticket(language="zh"), ["greeting", "holding", "closing"], agent_name="李雷"
        )
        assert text == (
            "Wang Fang，您好！\n\n"
            "抱歉让您久等了。我们仍在处理您的工单 #1042（Refund not received），"
            "一有进展会第一时间通知您。\n\n"
            "如还有其他问题，直接回复本邮件即可。\n\n祝好！\n李雷"
        )

    def test_compose_never_mixes_languages(self) -> None:
        scripts = ReplyScripts().with_templates(
            {"ja": {"greeting": "{customer_name}様"}}  # no holding part in Japanese
        )
        ticket = _ticket(language="ja")
        assert scripts.render("greeting", ticket) == "Wang Fang様"
        composed = scripts.compose(ticket, ["greeting", "holding"])
        assert composed.startswith("Hello Wang Fang,")

    def test_compose_rejects_unknown_parts_and_a_bare_string(self) -> None:
        with pytest.raises(ValidationError, match="apology"):
            ReplyScripts().compose(_ticket(), ["greeting", "apology"])
        with pytest.raises(ValidationError, match="parts"):
            ReplyScripts().compose(_ticket(), "greeting")

    def test_from_dict_holds_only_its_data(self) -> None:
        scripts = ReplyScripts.from_dict(
            {"en": {"greeting": "Hi {customer_name}!"}, "zh": {"greeting": "{customer_name}好"}},
            default_language="zh",
        )
        assert scripts.names == ("greeting",)
        assert scripts.languages == ("en", "zh")
        assert scripts.render("greeting", _ticket(language="de")) == "Wang Fang好"
        with pytest.raises(ValidationError, match="holding"):
            scripts.render("holding", _ticket())

    def test_with_templates_replaces_and_adds(self) -> None:
        base = ReplyScripts()
        changed = base.with_templates(
            {"EN": {"greeting": "Dear {customer_name},", "survey": "Rate ticket #{ticket_number}"}}
        )
        assert changed.render("greeting", _ticket(language="en")) == "Dear Wang Fang,"
        assert changed.render("survey", _ticket(language="en")) == "Rate ticket #1042"
        assert base.render("greeting", _ticket(language="en")) == "Hello Wang Fang,"  # unchanged
        assert changed.template("holding", "zh") == BUILTIN_TEMPLATES["zh"]["holding"]

    def test_round_trip_through_a_dict(self) -> None:
        scripts = ReplyScripts()
        assert ReplyScripts.from_dict(scripts.to_dict()).to_dict() == scripts.to_dict()
        assert scripts.to_dict() == {lang: dict(t) for lang, t in BUILTIN_TEMPLATES.items()}

    def test_custom_fields_and_format_specs(self) -> None:
        scripts = ReplyScripts.from_dict(
            {"en": {"ref": "Order {order_id}, ticket {ticket_number:06d}, {priority}"}}
        )
        ticket = _ticket(language="en", fields={"order_id": "SO-991"}, priority="high")
        assert scripts.render("ref", ticket) == "Order SO-991, ticket 001042, high"

    @pytest.mark.parametrize(
        "template",
        [
            "Hello {customer_name",
            "Hello {}",
            "Hello {0}",
            "Hello {ticket.customer}",
            "{customer_name.__class__}",
            "Hi {names[0]}",
            "Hi {customer_name:{width}",
        ],
    )
    def test_bad_templates_fail_at_load(self, template: str) -> None:
        with pytest.raises(ValidationError):
            ReplyScripts.from_dict({"en": {"greeting": template}})

    def test_bad_shapes_fail_at_load(self) -> None:
        with pytest.raises(ValidationError):
            ReplyScripts.from_dict({"en": "Hello"})  # type: ignore[dict-item]
        with pytest.raises(ValidationError):
            ReplyScripts.from_dict({"": {"greeting": "x"}})
        with pytest.raises(ValidationError):
            ReplyScripts.from_dict({"en": {"greeting": 42}})  # type: ignore[dict-item]

    def test_format_spec_that_does_not_fit(self) -> None:
        scripts = ReplyScripts.from_dict({"en": {"x": "{subject:d}"}})
        with pytest.raises(ValidationError, match="renders"):
            scripts.render("x", _ticket(language="en"))

    def test_nested_format_spec_fields_are_checked(self) -> None:
        scripts = ReplyScripts.from_dict({"en": {"x": "[{subject:>{width}}]"}})
        assert scripts.render("x", _ticket(language="en"), width=22) == ("[   Refund not received]")
        with pytest.raises(MissingTemplateField, match="width"):
            scripts.render("x", _ticket(language="en"))


# -- reply guard: links ----------------------------------------------------------------------
POLICY = ReplyPolicy(allowed_domains=["example.com", "acme.cn"])


def _kinds(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.kind, f.text) for f in findings]


def _positions_hold(body: str, findings: list[Finding]) -> None:
    for finding in findings:
        assert body[finding.start : finding.end] == finding.text


class TestLinks:
    @pytest.mark.parametrize(
        "body",
        [
            "See https://example.com/help for details.",
            "See https://help.example.com/a?b=c#d.",
            "Visit www.acme.cn or shop.acme.cn/orders/42.",
            "HTTPS://EXAMPLE.COM/UPPER",
            "Files: report.pdf, setup.py, README.md and v1.2.3 (e.g. this).",
            "Mail help@evil.com if stuck.",  # an address, not a link
            "Time is 10.30 and the total is 1,280.00.",
        ],
    )
    def test_allowed(self, body: str) -> None:
        assert ReplyGuard(POLICY).scan(body) == []

    @pytest.mark.parametrize(
        ("body", "text"),
        [
            ("Go to https://evil.com/login now", "https://evil.com/login"),
            ("Go to http://notexample.com/x", "http://notexample.com/x"),
            ("Go to https://example.com.evil.io/x", "https://example.com.evil.io/x"),
            ("Go to https://example.com@evil.io/x", "https://example.com@evil.io/x"),
            ("Go to http://192.168.0.1:8080/admin.", "http://192.168.0.1:8080/admin"),
            ("Try www.evil.com today", "www.evil.com"),
            ("Try evil.cn/refund, thanks", "evil.cn/refund"),
            ("(see https://evil.com/a_(b))", "https://evil.com/a_(b)"),
            ("请访问https://evil.com/x，谢谢", "https://evil.com/x"),
            ("打开 evil.com。", "evil.com"),
        ],
    )
    def test_flagged(self, body: str, text: str) -> None:
        findings = ReplyGuard(POLICY).scan(body)
        assert _kinds(findings) == [("link", text)]
        _positions_hold(body, findings)

    def test_full_width_and_zero_width_tricks(self) -> None:
        body = "请点击 ｅｖｉｌ．ｃｏｍ 或 ev\u200bil.com 或 ｅｘａｍｐｌｅ．ｃｏｍ"
        findings = ReplyGuard(POLICY).scan(body)
        assert _kinds(findings) == [("link", "ｅｖｉｌ．ｃｏｍ"), ("link", "ev\u200bil.com")]
        _positions_hold(body, findings)
        assert "evil.com" in findings[0].detail

    def test_idn_hosts_compare_as_punycode(self) -> None:
        policy = ReplyPolicy(allowed_domains=["例子.测试"])
        assert ReplyGuard(policy).scan("见 https://xn--fsqu00a.xn--0zwm56d/a") == []
        assert ReplyGuard(policy).scan("见 https://例子.测试/a") == []

    @pytest.mark.parametrize(
        ("body", "text", "host"),
        [
            ("Go to //evil.io/path now", "//evil.io/path", "evil.io"),
            ("Go to \\\\evil.io\\share now", "\\\\evil.io\\share", "evil.io"),
            ("Go to /\\evil.io now", "/\\evil.io", "evil.io"),
            ("See [help](//evil.io/x).", "//evil.io/x", "evil.io"),
            ("See <a href='//evil.io'>help</a>", "//evil.io", "evil.io"),
            ("请访问//evil.io/x，谢谢", "//evil.io/x", "evil.io"),
            ("Go to ／／ｅｖｉｌ．ｉｏ/x now", "／／ｅｖｉｌ．ｉｏ/x", "evil.io"),
            ("Go to //example.com@evil.io/ now", "//example.com@evil.io/", "evil.io"),
            ("Go to //10.0.0.1/admin now", "//10.0.0.1/admin", "10.0.0.1"),
            ("Go to https:evil.io now", "https:evil.io", "evil.io"),
            ("Go to https:/evil.io now", "https:/evil.io", "evil.io"),
            ("Go to https:///evil.io now", "https:///evil.io", "evil.io"),
            ("Go to https:/\\evil.io now", "https:/\\evil.io", "evil.io"),
            ("Go to ftp://evil.io/x now", "ftp://evil.io/x", "evil.io"),
            ("Go to wss://evil.io now", "wss://evil.io", "evil.io"),
            ("Go to https://example.com%2eevil.io now", "https://example.com%2eevil.io", "evil.io"),
            (
                "Go to https://help.example.com。evil。io/x",
                "https://help.example.com。evil。io/x",
                "help.example.com.evil.io",
            ),
            ("Go to help.example.com。evil。io", "help.example.com。evil。io", "evil.io"),
        ],
    )
    def test_links_a_browser_opens_on_another_host(self, body: str, text: str, host: str) -> None:
        # What a browser (or a reply rendered as HTML or Markdown) opens: a protocol-relative
        # link, backslashes for slashes, any run of slashes after https:, other schemes, and
        # the ideographic full stop browsers read as a dot.
        findings = ReplyGuard(POLICY).scan(body)
        assert _kinds(findings) == [("link", text)]
        assert host in findings[0].detail
        _positions_hold(body, findings)

    @pytest.mark.parametrize(
        "body",
        [
            "Pick one and/or the other.",
            "In the code, a//b and x = a // b stay as they are.",
            "The release is due 12//2026.",
            "// TODO: check //config.json and rm -rf //tmp",
            "See //example.com/help or \\\\help.example.com\\docs.",
            "See https:/help.example.com and https:example.com.",
            "See https://help.ex%61mple.com/a",
            "The old protocol is http: it is not encrypted.",
            "请访问 example.com。谢谢",
            "See example.com。Thanks!",
        ],
    )
    def test_slashes_in_ordinary_text_are_not_links(self, body: str) -> None:
        assert ReplyGuard(POLICY).scan(body) == []

    def test_bare_international_names_are_read_whole(self) -> None:
        policy = ReplyPolicy(allowed_domains=["münchen.de", "example.com"])
        assert ReplyGuard(policy).scan("Visit münchen.de or www.münchen.de today.") == []
        # A look-alike with a Cyrillic "е" is another host, shown as the browser asks for it.
        findings = ReplyGuard(policy).scan("Visit еxample.com today.")
        assert _kinds(findings) == [("link", "еxample.com")]
        assert "xn--" in findings[0].detail

    def test_policy_normalises_domains(self) -> None:
        policy = ReplyPolicy(
            allowed_domains=["https://Help.Example.com/path", "*.acme.cn", ".x.io"]
        )
        assert policy.allowed_domains == frozenset({"help.example.com", "acme.cn", "x.io"})
        assert policy.allows_host("a.help.example.com")
        assert not policy.allows_host("example.com")
        with pytest.raises(ValidationError):
            ReplyPolicy(allowed_domains="example.com")
        with pytest.raises(ValidationError):
            ReplyPolicy(allowed_domains=[""])


# -- reply guard: internal notes -------------------------------------------------------------
NOTE = (
    "Internal: customer is on the fraud watchlist, do not refund before the risk team "
    "signs off. Case ref RISK-2291."
)


class TestInternalNotes:
    def test_copied_note_is_found_despite_whitespace_and_case(self) -> None:
        ticket = _ticket(messages=(_note(NOTE),))
        body = (
            "Hello, thanks for waiting.\nCUSTOMER IS ON THE FRAUD   watchlist,\n do not refund "
            "before the risk team. Bye"
        )
        findings = ReplyGuard(POLICY).check(ticket, body)
        assert len(findings) == 1
        [finding] = findings
        assert finding.kind == "internal_note"
        assert finding.text == (
            "CUSTOMER IS ON THE FRAUD   watchlist,\n do not refund before the risk team"
        )
        assert "m-1" in finding.detail
        _positions_hold(body, findings)

    def test_short_overlaps_and_public_messages_pass(self) -> None:
        public = _note("We are looking into your refund request right now.", public=True)
        ticket = _ticket(messages=(_note(NOTE), public))
        body = "The risk team will call. We are looking into your refund request right now."
        assert ReplyGuard(POLICY).check(ticket, body) == []
        assert len("the risk team will") < 20

    def test_threshold_is_configurable_and_checks_can_be_off(self) -> None:
        ticket = _ticket(messages=(_note(NOTE),))
        body = "Ask the risk team."
        strict = ReplyPolicy(allowed_domains=[], min_note_overlap=10)
        assert _kinds(ReplyGuard(strict).check(ticket, body)) == [
            ("internal_note", "the risk team")
        ]
        off = ReplyPolicy(allowed_domains=[], min_note_overlap=10, check_internal_notes=False)
        assert ReplyGuard(off).check(ticket, body) == []

    def test_chinese_note(self) -> None:
        note = _note("内部备注：该客户曾多次恶意退款，请勿直接退款，需主管审批。", id="m-9")
        ticket = _ticket(messages=(note,))
        body = "您好，该客户曾多次恶意退款，请勿直接退款，谢谢。"
        policy = ReplyPolicy(allowed_domains=[], min_note_overlap=12)
        [finding] = ReplyGuard(policy).check(ticket, body)
        assert finding.text == "该客户曾多次恶意退款，请勿直接退款，"
        assert "m-9" in finding.detail

    def test_large_inputs_stay_fast(self) -> None:
        rng = random.Random(5)
        words = [
            "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
            for _ in range(3000)
        ]
        notes = tuple(
            _note(" ".join(rng.choice(words) for _ in range(4000)), id=f"m-{i}") for i in range(5)
        )
        secret = notes[3].body[5000:5200]
        body = " ".join(rng.choice(words) for _ in range(8000)) + " " + secret + " end"
        started = time.perf_counter()
        findings = ReplyGuard(ReplyPolicy(allowed_domains=[], min_note_overlap=40)).check(
            _ticket(messages=notes), body
        )
        elapsed = time.perf_counter() - started
        assert any(secret.strip() in f.text for f in findings if f.kind == "internal_note")
        assert elapsed < 5, f"guard took {elapsed:.2f}s on ~150k characters of notes"

    @settings(max_examples=300, deadline=None)
    @given(
        body=st.text(alphabet="ab ", max_size=60),
        notes=st.lists(st.text(alphabet="ab ", max_size=40), max_size=3),
        size=st.integers(min_value=1, max_value=6),
    )
    def test_runs_cover_exactly_the_shared_windows(
        self, body: str, notes: list[str], size: int
    ) -> None:
        prepared = [(_note(text, id=f"m-{i}"), text) for i, text in enumerate(notes)]
        covered: set[int] = set()
        for start in range(len(body) - size + 1):
            if any(body[start : start + size] in text for text in notes):
                covered.update(range(start, start + size))
        found: set[int] = set()
        for start, end, _ in _copied_runs(body, prepared, size):
            assert end - start >= size
            found.update(range(start, end))
        assert found == covered


# -- reply guard: forbidden terms ------------------------------------------------------------
TERMS = ReplyPolicy(
    allowed_domains=["example.com"],
    forbidden_terms=["guarantee", "保证", "100% refund", "free gift", "free"],
)


class TestForbiddenTerms:
    def test_case_insensitive_whole_words(self) -> None:
        body = "We GUARANTEE it. A guaranteed fix? No, a Guarantee."
        findings = ReplyGuard(TERMS).scan(body)
        assert _kinds(findings) == [
            ("forbidden_term", "GUARANTEE"),
            ("forbidden_term", "Guarantee"),
        ]
        assert findings[0].detail == "forbidden term 'guarantee'"

    def test_chinese_terms_match_inside_sentences(self) -> None:
        body = "我们保证三天内退款。"
        assert _kinds(ReplyGuard(TERMS).scan(body)) == [("forbidden_term", "保证")]

    def test_full_width_zero_width_and_spacing_are_folded(self) -> None:
        body = "ＦＲＥＥ gift! Get a f\u200bree   gift and a 100％ REFUND."
        findings = ReplyGuard(TERMS).scan(body)
        assert _kinds(findings) == [
            ("forbidden_term", "ＦＲＥＥ gift"),
            ("forbidden_term", "f\u200bree   gift"),
            ("forbidden_term", "100％ REFUND"),
        ]
        _positions_hold(body, findings)

    @pytest.mark.parametrize(
        ("body", "text"),
        [
            ("Your pas\u0301sword is safe.", "pas\u0301sword"),  # composes to ś under NFKC
            ("Your pa\u0336ssword is safe.", "pa\u0336ssword"),  # strike-through overlay
            ("Your p\u0489assword is safe.", "p\u0489assword"),  # enclosing mark
            ("Your pa\u0e31ssword is safe.", "pa\u0e31ssword"),  # a Thai mark on a Latin letter
            ("Your pásswörd is safe.", "pásswörd"),
            ("Your P\u0301A\u0301S\u0301S\u0301WORD is safe.", "P\u0301A\u0301S\u0301S\u0301WORD"),
            ("A fre\u20dde gift.", "fre\u20dde gift"),  # enclosing circle, combining class 0
            ("A fr\u034fee gift.", "fr\u034fee gift"),  # combining grapheme joiner
            ("A fre\ufe0fe gift.", "fre\ufe0fe gift"),  # variation selector
            ("A fr\u3164ee gift.", "fr\u3164ee gift"),  # Hangul filler
            ("A fre\u180be gift.", "fre\u180be gift"),  # Mongolian variation selector
            ("A f\U000e0041ree gift.", "f\U000e0041ree gift"),  # tag character
        ],
    )
    def test_marks_and_invisible_characters_do_not_hide_a_term(self, body: str, text: str) -> None:
        policy = ReplyPolicy(allowed_domains=[], forbidden_terms=["password", "free gift"])
        findings = ReplyGuard(policy).scan(body)
        assert _kinds(findings) == [("forbidden_term", text)]
        _positions_hold(body, findings)

    @given(
        st.lists(
            st.tuples(
                st.integers(min_value=1, max_value=7),
                st.sampled_from("\u0301\u0308\u0336\u0489\u20dd\u034f\ufe0f\u200b\u00ad\u2060"),
            ),
            min_size=1,
            max_size=6,
        )
    )
    def test_any_decoration_between_letters_is_seen_through(
        self, inserts: list[tuple[int, str]]
    ) -> None:
        word = list("password")
        for position, mark in sorted(inserts, reverse=True):
            word.insert(position, mark)
        body = "Please send your " + "".join(word) + " today."
        policy = ReplyPolicy(allowed_domains=[], forbidden_terms=["password"])
        findings = ReplyGuard(policy).scan(body)
        assert [f.kind for f in findings] == ["forbidden_term"]
        _positions_hold(body, findings)

    def test_a_term_with_accents_needs_them(self) -> None:
        policy = ReplyPolicy(allowed_domains=[], forbidden_terms=["crème brûlée", "año", "creme"])
        guard = ReplyGuard(policy)
        assert guard.scan("Buen ano") == []  # another word than año
        assert _kinds(guard.scan("Buen an\u0303o")) == [("forbidden_term", "an\u0303o")]
        assert _kinds(guard.scan("cre\u0300me bru\u0302le\u0301e")) == [
            ("forbidden_term", "cre\u0300me bru\u0302le\u0301e")
        ]
        # The longer term lacks its accents here; the shorter one is still found.
        assert _kinds(guard.scan("creme brulee")) == [("forbidden_term", "creme")]
        # Capitals are often written without their accents (French, Greek).
        assert _kinds(guard.scan("CREME BRULEE")) == [("forbidden_term", "CREME BRULEE")]
        greek = ReplyGuard(ReplyPolicy(allowed_domains=[], forbidden_terms=["δωρεάν"]))
        assert _kinds(greek.scan("ΔΩΡΕΑΝ, δωρεάν")) == [
            ("forbidden_term", "ΔΩΡΕΑΝ"),
            ("forbidden_term", "δωρεάν"),
        ]

    @pytest.mark.parametrize(
        "body",
        [
            "Your \u0440\u0430ssword",  # Cyrillic р and а in a Latin word
            "Your PASSW\u041eRD",  # a Cyrillic capital О
            "Your \u03c1\u03b1ssword",  # Greek ρ and α
            "A fr\u0435e gift",  # FREE GIFT's e
            "\u0433a\u0440a\u043d\u0442\u0438\u044f",  # гарантия with two Latin a
        ],
    )
    def test_look_alike_letters_from_another_script_do_not_hide_a_term(self, body: str) -> None:
        policy = ReplyPolicy(
            allowed_domains=[], forbidden_terms=["password", "free gift", "гарантия"]
        )
        findings = ReplyGuard(policy).scan(body)
        assert [f.kind for f in findings] == ["forbidden_term"]
        _positions_hold(body, findings)

    def test_words_in_one_script_are_not_read_as_another(self) -> None:
        # Russian сор and рот look like cop and pot, but are words of their own.
        policy = ReplyPolicy(allowed_domains=[], forbidden_terms=["cop", "pot", "Москва"])
        assert ReplyGuard(policy).scan("сор, рот; Mockba") == []

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.sampled_from(
                [
                    "password",
                    "free gift",
                    "//evil.io/x",
                    "https:evil.io",
                    "example.com",
                    " ",
                    "  ",
                    "\t",
                    "a",
                    "é",
                    "\u0301",
                    "\u0336",
                    "\u200b",
                    "\ufe0f",
                    "\u034f",
                    "р",
                    "а",
                    "保证",
                    "。",
                    "/",
                    "\\",
                    "ｅｖｉｌ．ｉｏ",
                    "ﬁ",
                    "\u3164",
                    "Σ",
                ]
            ),
            max_size=30,
        )
    )
    def test_findings_point_into_any_body(self, parts: list[str]) -> None:
        body = "".join(parts)
        policy = ReplyPolicy(
            allowed_domains=["example.com"], forbidden_terms=["password", "free gift", "保证"]
        )
        findings = ReplyGuard(policy).scan(body)
        _positions_hold(body, findings)
        assert all(f.start < f.end for f in findings)

    def test_greek_and_cyrillic_terms_match_whole_words(self) -> None:
        policy = ReplyPolicy(allowed_domains=[], forbidden_terms=["кот", "гарантия"])
        body = "Который час? Гарантия! Наш кот."
        assert _kinds(ReplyGuard(policy).scan(body)) == [
            ("forbidden_term", "Гарантия"),
            ("forbidden_term", "кот"),
        ]

    def test_marks_that_spell_words_still_count(self) -> None:
        # Thai tone marks and kana voicing marks are letters: ป่า (forest) is not ปา (throw),
        # ばば is not はは.
        policy = ReplyPolicy(allowed_domains=[], forbidden_terms=["ปา", "はは"])
        assert ReplyGuard(policy).scan("ป่า ばば") == []
        assert _kinds(ReplyGuard(policy).scan("ปา はは")) == [
            ("forbidden_term", "ปา"),
            ("forbidden_term", "はは"),
        ]

    def test_no_false_positive_inside_words(self) -> None:
        assert ReplyGuard(TERMS).scan("Freedom of the carefree classroom.") == []

    def test_blank_terms_are_rejected(self) -> None:
        with pytest.raises(ValidationError):
            ReplyPolicy(allowed_domains=[], forbidden_terms=["  "])
        with pytest.raises(ValidationError):
            ReplyPolicy(allowed_domains=[], forbidden_terms="free")


# -- enforce ----------------------------------------------------------------------------------
class TestEnforce:
    ticket = _ticket(messages=(_note(NOTE),))
    body = "We guarantee it: see https://evil.com/x"

    def test_clean_reply_passes(self) -> None:
        assert ReplyGuard(TERMS).enforce(self.ticket, "We will look into it today.") == []

    def test_findings_block_the_reply(self) -> None:
        with pytest.raises(ReplyBlocked) as caught:
            ReplyGuard(TERMS).enforce(self.ticket, self.body)
        error = caught.value
        assert error.ticket_id == "t-7"
        assert [f.kind for f in error.findings] == ["forbidden_term", "link"]
        assert "evil.com" in str(error)

    @pytest.mark.parametrize("role", ["team_lead", "manager", "MANAGER"])
    def test_allowed_override_returns_the_findings(self, role: str) -> None:
        findings = ReplyGuard(TERMS).enforce(
            self.ticket, self.body, override_by="lead_zhao", override_role=role
        )
        assert [f.kind for f in findings] == ["forbidden_term", "link"]

    def test_override_by_other_roles_is_blocked(self) -> None:
        with pytest.raises(ReplyBlocked):
            ReplyGuard(TERMS).enforce(
                self.ticket, self.body, override_by="agent_li", override_role="agent"
            )
        with pytest.raises(ReplyBlocked):
            ReplyGuard(TERMS).enforce(self.ticket, self.body, override_by="agent_li")

    def test_override_roles_are_configurable(self) -> None:
        policy = ReplyPolicy(
            allowed_domains=["example.com"], forbidden_terms=["guarantee"], override_roles=["qa"]
        )
        assert ReplyGuard(policy).enforce(
            self.ticket, self.body, override_by="x", override_role="qa"
        )
        with pytest.raises(ReplyBlocked):
            ReplyGuard(policy).enforce(
                self.ticket, self.body, override_by="x", override_role="manager"
            )

    def test_a_role_without_a_person_is_a_mistake(self) -> None:
        with pytest.raises(ValidationError, match="override_by"):
            ReplyGuard(TERMS).enforce(self.ticket, self.body, override_role="manager")


# -- ill-typed arguments: a ValidationError naming the argument -----------------------------
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"allowed_domains": None}, "allowed_domains"),
        ({"allowed_domains": 5}, "allowed_domains"),
        ({"allowed_domains": [5]}, "allowed_domains"),
        ({"forbidden_terms": None}, "forbidden_terms"),
        ({"forbidden_terms": 5}, "forbidden_terms"),
        ({"forbidden_terms": [None]}, "forbidden_terms"),
        ({"override_roles": None}, "override_roles"),
        ({"override_roles": 5}, "override_roles"),
        ({"override_roles": [5]}, "override_roles"),
        ({"override_roles": "manager"}, "override_roles"),
        ({"min_note_overlap": None}, "min_note_overlap"),
    ],
)
def test_reply_policy_names_an_ill_typed_argument(changes: dict[str, Any], field: str) -> None:
    arguments: dict[str, Any] = {"allowed_domains": ["example.com"], **changes}
    with pytest.raises(ValidationError) as refused:
        ReplyPolicy(**arguments)
    assert refused.value.field == field


def test_reply_policy_reads_any_iterable_once() -> None:
    policy = ReplyPolicy(
        allowed_domains=(d for d in ["example.com"]),
        forbidden_terms=(t for t in ["free", "保证"]),
        override_roles=(r for r in [RecipientRole.MANAGER, "Team_Lead"]),
    )
    assert policy.allowed_domains == frozenset({"example.com"})
    assert policy.forbidden_terms == ("free", "保证")
    assert policy.override_roles == frozenset({"manager", "team_lead"})


@pytest.mark.parametrize("policy", [None, 5, {"allowed_domains": ["example.com"]}])
def test_reply_guard_needs_a_policy(policy: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        ReplyGuard(policy)
    assert refused.value.field == "policy"


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: ReplyScripts(default_language=None), "default_language"),
        (lambda: ReplyScripts(default_language=5), "default_language"),
        (lambda: ReplyScripts(default_language=" "), "default_language"),
        (lambda: ReplyScripts(5), "templates"),
        (lambda: ReplyScripts().with_templates(None), "templates"),
        (lambda: ReplyScripts().with_templates({5: {"greeting": "Hi"}}), "templates"),
        (lambda: ReplyScripts().with_templates({"en": "Hi"}), "templates['en']"),
        (lambda: ReplyScripts().with_templates({"en": {}}, default_language=5), "default_language"),
    ],
)
def test_reply_scripts_name_an_ill_typed_argument(build: Any, field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        build()
    assert refused.value.field == field
