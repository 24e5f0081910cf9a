"""The classification engine, told as support-desk stories."""

from __future__ import annotations

import json
import unicodedata
from datetime import datetime, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supportflow._textmatch import Automaton, find_naive, normalize
from supportflow.classify import (
    DEFAULT_SENSITIVE_WORDS,
    EARLY_WARNING_TAG,
    AddTags,
    All,
    AssignTo,
    CapPriority,
    CategoryIs,
    ChannelIs,
    Classification,
    Classifier,
    FieldEquals,
    FlagTeamLead,
    HasTag,
    IsVip,
    Keywords,
    Not,
    PriorityMatrix,
    RaisePriority,
    Regex,
    RouteTo,
    Rule,
    SetCategory,
    SetFingerprint,
    SetImpactUrgency,
    TierIs,
    fingerprint,
)
from supportflow.classify import Any as AnyOf  # the condition; typing's Any is used too
from supportflow.errors import ValidationError
from supportflow.model import Customer, Message, Priority, Role, Ticket
from supportflow.sla import SlaCondition

AT = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)


def ticket(subject: str = "", description: str = "", **changes: Any) -> Ticket:
    customer = changes.pop("customer", Customer(id="c-1", name="Li Wei"))
    base = Ticket(
        id="t-1",
        number=1,
        subject=subject,
        description=description,
        customer=customer,
        channel=changes.pop("channel", "email"),
        status="new",
        created_at=AT,
        updated_at=AT,
    )
    return attrs.evolve(base, **changes)


def classify(rules: list[Rule], item: Ticket, **options: Any) -> Classification:
    return Classifier(rules, **options).classify(item)


VPN = Rule("vpn", Keywords(["vpn", "断网", "连不上"]), [SetCategory("network")])


# ------------------------------------------------------------------------- early warning


def test_chinese_ticket_mentioning_a_journalist_is_raised_and_flagged() -> None:
    item = ticket("退款一直不到账", "再不处理我就找记者曝光你们")

    result = classify([], item)

    assert result.priority is Priority.HIGH
    assert result.flag_team_lead is True
    assert EARLY_WARNING_TAG in result.tags
    assert result.early_warning_words == ("记者", "曝光")  # in the order of the list
    (reason,) = result.reasons
    assert reason.rule == "<early-warning>"
    assert reason.matched == ("记者", "曝光")
    assert reason.fields == ("description",)


def test_english_threats_match_as_words_and_phrases() -> None:
    result = classify([], ticket("Refund", "I want to speak to YOUR\n  Manager or I will sue"))

    assert result.early_warning_words == ("sue", "your manager")
    assert result.priority is Priority.HIGH


def test_sue_is_not_found_in_issue_nor_manager_in_managers() -> None:
    result = classify([], ticket("Login issue", "your managers said it was a pursuer issue"))

    assert result.early_warning_words == ()
    assert result.flag_team_lead is False
    assert result.priority is Priority.NORMAL


def test_early_warning_outranks_a_cap_and_an_explicit_low_priority() -> None:
    calm = Rule("calm", Keywords(["refund"]), [CapPriority("low")])
    item = ticket("refund", "my lawyer will call", priority="low", priority_explicit=True)

    result = classify([calm], item)

    assert result.priority is Priority.HIGH
    assert any(r.rule == "<explicit-priority>" and "raised" in r.detail for r in result.reasons)


def test_early_warning_reads_customer_messages_but_not_agent_notes() -> None:
    said = [
        Message(id="m1", author="agent_li", role=Role.AGENT, body="not a police matter", at=AT),
        Message(id="m2", author="c-1", role=Role.CUSTOMER, body="我要打12315投诉", at=AT),
    ]
    result = classify([], ticket("快递丢了", "", messages=tuple(said)))

    assert result.early_warning_words == ("12315",)
    assert result.reasons[-1].fields == ("messages",)


def test_sensitive_words_are_replaceable_and_can_be_turned_off() -> None:
    item = ticket("记者", "contact the ombudsman")

    assert classify([], item, sensitive_words=None).flag_team_lead is False
    custom = classify([], item, sensitive_words=["Ombudsman"])
    assert custom.early_warning_words == ("Ombudsman",)
    assert Classifier([], sensitive_words=[]).sensitive_words == ()
    assert {"记者", "12315", "your manager", "sue"} <= set(DEFAULT_SENSITIVE_WORDS)


# ------------------------------------------------------------------------------ matching


def test_full_width_text_matches_a_half_width_keyword_and_back() -> None:
    assert classify([VPN], ticket("ＶＰＮ连不上了")).category == "network"
    wide = Rule("wide", Keywords(["ＰＡＳＳＷＯＲＤ"]), [SetCategory("account")])
    assert classify([wide], ticket("forgot my Password")).category == "account"


def test_latin_keyword_inside_chinese_text_is_a_whole_word() -> None:
    result = classify([VPN], ticket("", "公司的vpn今天又坏了"))

    assert result.category == "network"
    assert result.reasons[0].matched == ("vpn",)
    assert classify([VPN], ticket("vpnclient crashed")).category is None


def test_keywords_report_the_words_and_fields_that_matched() -> None:
    result = classify([VPN], ticket("VPN down", "家里断网，VPN也连不上"))

    (reason,) = result.reasons
    assert reason == attrs.evolve(
        reason,
        rule="vpn",
        action="set_category",
        detail="network",
        matched=("vpn", "断网", "连不上"),
    )
    assert reason.fields == ("subject", "description")


@pytest.mark.parametrize(
    ("keyword", "text"),
    [
        ("เน็ตล่ม", "บ้านเน็ตล่มอีกแล้วครับ"),  # Thai: "the internet is down"
        ("ອິນເຕີເນັດ", "ບ້ານອິນເຕີເນັດບໍ່ໄດ້"),  # Lao
        ("អ៊ីនធឺណិត", "ផ្ទះអ៊ីនធឺណិតដាច់"),  # Khmer
        ("အင်တာနက်", "အိမ်မှာအင်တာနက်မရဘူး"),  # Burmese
        ("서버", "서버가 다운됐어요"),  # Korean: a particle follows the noun
        ("vpn", "vpnล่มอีกแล้ว"),  # a Latin word beside Thai is a whole word
    ],
    ids=["thai", "lao", "khmer", "burmese", "korean", "latin-beside-thai"],
)
def test_keywords_in_scripts_without_spaces_match_inside_a_sentence(
    keyword: str, text: str
) -> None:
    rule = Rule("net", Keywords([keyword]), [SetCategory("network")])

    assert classify([rule], ticket(text)).category == "network"


@pytest.mark.parametrize(
    "text",
    [
        "I want a re\u200bfund",  # zero-width space
        "I want a re\u00adfund",  # soft hyphen
        "I want a re\u2060fund",  # word joiner
        "I want a \u202erefund\u202c",  # bidi override around the word
        "我要退\u200d款",  # zero-width joiner in Chinese
    ],
    ids=["zwsp", "soft-hyphen", "word-joiner", "bidi", "zwj-chinese"],
)
def test_invisible_format_characters_do_not_hide_a_keyword(text: str) -> None:
    rule = Rule("refund", Keywords(["refund", "退款"]), [SetCategory("billing")])

    assert classify([rule], ticket(text)).category == "billing"


def test_every_invisible_character_is_removed_from_the_matching_form() -> None:
    # Written out in the module for a fast import: it must cover what Unicode calls Cf, and
    # the other default-ignorable code points (variation selectors, Hangul fillers, ...).
    formats = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf"]
    others = ["\u034f", "\u115f", "\u17b4", "\u180b", "\u3164", "\ufe0f", "\U000e0100"]
    assert normalize("a" + "".join(formats + others) + "b") == "ab"


def test_keywords_can_be_limited_to_fields() -> None:
    subject_only = Rule("s", Keywords(["invoice"], fields=["subject"]), [SetCategory("billing")])

    assert classify([subject_only], ticket("Invoice", "")).category == "billing"
    assert classify([subject_only], ticket("help", "invoice")).category is None
    custom = Rule("f", Keywords(["bulk"], fields=["fields.order_note"]), [AddTags("bulk")])
    assert classify([custom], ticket(fields={"order_note": "BULK order"})).tags == {"bulk"}
    assert attrs.evolve(Keywords(["Bulk"]), fields=["subject"]).index == {"bulk": 0}


def test_regex_runs_on_the_normalised_text() -> None:
    order = Rule("order", Regex(r"订单号?\s*#?\d{6}"), [AddTags("has-order")])

    result = classify([order], ticket("订单号 ＃１２３４５６ 没发货"))

    assert result.tags == {"has-order"}
    assert result.reasons[0].matched == ("订单号 #123456",)


# ------------------------------------------------------------------------ rules & actions


def test_a_vip_rule_routes_to_the_vip_group_and_assigns() -> None:
    vip = Rule("vip", IsVip(), [RouteTo("vip-desk"), AssignTo("agent_wang"), FlagTeamLead("vip")])
    item = ticket("hello", customer=Customer(id="c-9", tier="VIP"))

    result = classify([vip], item)

    assert (result.group, result.assignee, result.flag_team_lead) == (
        "vip-desk",
        "agent_wang",
        True,
    )
    assert [r.action for r in result.reasons] == ["route_to", "assign_to", "flag_team_lead"]
    assert result.reasons[0].fields == ("tier=vip",)
    assert classify([vip], ticket("hello")).group is None


def test_later_rules_override_and_stop_ends_the_run() -> None:
    rules = [
        Rule("general", Keywords(["refund"]), [SetCategory("billing"), RouteTo("billing")]),
        Rule("chat", ChannelIs("chat"), [RouteTo("chat-team")], stop=True),
        Rule("never", Keywords(["refund"]), [SetCategory("other")]),
    ]

    by_chat = classify(rules, ticket("refund please", channel="chat"))
    by_mail = classify(rules, ticket("refund please"))

    assert (by_chat.category, by_chat.group) == ("billing", "chat-team")
    assert by_chat.reasons[-1].action == "stop"
    assert (by_mail.category, by_mail.group) == ("other", "billing")


def test_category_and_tag_conditions_see_what_earlier_rules_did() -> None:
    rules = [
        VPN,
        Rule("tag", CategoryIs("Network"), [AddTags("infra")]),
        Rule("route", HasTag("infra") & TierIs("gold"), [RouteTo("noc")]),
    ]
    gold = Customer(id="c-2", tier="gold")

    result = classify(rules, ticket("断网了", customer=gold))

    assert (result.category, result.group) == ("network", "noc")
    assert result.tags == {"infra"}


@pytest.mark.parametrize("tier", ["VIP", " vip ", "Vip\t"])
def test_a_tier_matches_alike_in_rules_sla_conditions_and_is_vip(tier: str) -> None:
    customer = Customer(id="c-3", tier=tier)
    item = ticket("Invoice missing", customer=customer)

    result = classify([Rule("vip", TierIs("vip"), [RouteTo("vip-desk")])], item)

    assert result.group == "vip-desk"
    assert customer.is_vip
    assert SlaCondition(tiers=["vip"]).explain(item) == "tier vip"


def test_all_any_not_compose() -> None:
    condition = All(
        AnyOf(Keywords(["refund"]), Keywords(["退款"])),
        Not(ChannelIs("phone")),
        ~FieldEquals("customer.language", "de"),
    )
    rule = Rule("refund", condition, [SetCategory("billing")])

    assert classify([rule], ticket("退款", channel="web")).category == "billing"
    assert classify([rule], ticket("退款", channel="phone")).category is None
    assert classify([rule], ticket("hello", channel="web")).category is None
    assert (Keywords(["a"]) | IsVip()) == AnyOf(Keywords(["a"]), IsVip())


def test_field_equals_reads_custom_fields_and_ticket_attributes() -> None:
    rules = [
        Rule("bulk", FieldEquals("order_type", "bulk"), [AddTags("bulk")]),
        Rule("inc", FieldEquals("kind", "incident"), [AddTags("incident")]),
    ]
    item = ticket("x", fields={"order_type": "bulk"}, kind="incident")

    assert classify(rules, item).tags == {"bulk", "incident"}


def test_field_equals_reads_what_a_customer_keeps_and_tiers_as_tiers_compare() -> None:
    vip = Customer(id="c-9", name="Ana", tier="vip", language="pt")
    rules = [
        Rule("tier", FieldEquals("customer.tier", "VIP"), [AddTags("tier")]),
        Rule("lang", FieldEquals("customer.language", "pt"), [AddTags("lang")]),
        Rule("flag", FieldEquals("customer.is_vip", True), [AddTags("flag")]),
    ]

    assert classify(rules, ticket("x", customer=vip)).tags == {"tier", "lang", "flag"}
    # Another attribute of the object is no field: refused when built, not read.
    for name in ("customer.__class__", "customer.email", "customer."):
        with pytest.raises(ValidationError) as error:
            FieldEquals(name, "x")
        assert error.value.field == "name"
        assert "customer.<id | name | contacts | tier" in error.value.expected


# ------------------------------------------------------------------------------- priority


def test_default_matrix_is_the_itil_one() -> None:
    matrix = PriorityMatrix()
    decided = {(i, u): matrix.decide(i, u).value for i in matrix.impacts for u in matrix.urgencies}

    assert decided == {
        ("high", "high"): "urgent",
        ("high", "medium"): "high",
        ("high", "low"): "normal",
        ("medium", "high"): "high",
        ("medium", "medium"): "normal",
        ("medium", "low"): "low",
        ("low", "high"): "normal",
        ("low", "medium"): "low",
        ("low", "low"): "low",
    }


def test_unknown_levels_name_impact_or_urgency() -> None:
    with pytest.raises(ValidationError) as impact:
        PriorityMatrix().decide("huge", "high")
    with pytest.raises(ValidationError) as urgency:
        PriorityMatrix().decide("high", "asap")

    assert (impact.value.field, urgency.value.field) == ("impact", "urgency")
    with pytest.raises(ValidationError, match="every impact"):
        PriorityMatrix({("a", "x"): "high", ("b", "y"): "low"})


def test_rules_set_impact_and_urgency_and_the_matrix_decides() -> None:
    outage = Rule("outage", Keywords(["全部用户", "everyone"]), [SetImpactUrgency("high", "high")])

    result = classify([outage], ticket("everyone is down"))

    assert (result.impact, result.urgency, result.priority) == ("high", "high", Priority.URGENT)
    assert result.reasons[-1].rule == "<matrix>"


def test_the_ticket_impact_and_a_rule_urgency_combine() -> None:
    urgent = Rule("now", Keywords(["asap"]), [SetImpactUrgency(urgency="high")])

    result = classify([urgent], ticket("asap please", impact="low"))

    assert result.priority is Priority.NORMAL


def test_a_ticket_level_the_matrix_lacks_is_refused() -> None:
    with pytest.raises(ValidationError) as error:
        classify([], ticket("x", impact="critical", urgency="high"))
    assert error.value.field == "impact"


def test_explicit_priority_wins_over_the_matrix_and_caps() -> None:
    rules = [
        Rule("minor", Keywords(["typo"]), [SetImpactUrgency("low", "low"), CapPriority("low")]),
    ]
    item = ticket("typo on the site", priority="high", priority_explicit=True)

    result = classify(rules, item)

    assert result.priority is Priority.HIGH
    kept = [r.detail for r in result.reasons if r.rule == "<explicit-priority>"]
    assert kept == [
        "explicit high kept; the matrix gives low",
        "explicit high kept; minor caps at low",
    ]


def test_raise_still_raises_an_explicit_priority() -> None:
    rule = Rule("fire", Keywords(["fire"]), [RaisePriority("urgent")])
    item = ticket("fire", priority="normal", priority_explicit=True)

    assert classify([rule], item).priority is Priority.URGENT


def test_cap_priority_limits_what_the_matrix_and_raises_gave() -> None:
    rules = [
        Rule("big", Keywords(["outage"]), [SetImpactUrgency("high", "high")]),
        Rule("test", Keywords(["test"]), [RaisePriority("urgent"), CapPriority("normal")]),
    ]

    assert classify(rules, ticket("outage")).priority is Priority.URGENT
    assert classify(rules, ticket("outage test")).priority is Priority.NORMAL
    assert classify(rules, ticket("test")).priority is Priority.NORMAL


# ---------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_category_and_sorted_key_terms() -> None:
    result = classify([VPN], ticket("VPN 连不上", "还是断网"))

    assert result.fingerprint == "network|vpn|断网|连不上"
    assert fingerprint(ticket("vpn"), result) == result.fingerprint


def test_fingerprint_from_a_rule_wins_and_none_without_category() -> None:
    incident = Rule("inc", Keywords(["vpn"]), [SetFingerprint("inc-0302-vpn")])

    assert classify([VPN, incident], ticket("vpn")).fingerprint == "inc-0302-vpn"
    assert classify([VPN], ticket("hello")).fingerprint is None
    assert classify([VPN], ticket("hello", category="Billing")).fingerprint == "billing"


def test_changes_lists_what_to_write_back() -> None:
    rules = [VPN, Rule("t", Keywords(["vpn"]), [AddTags("vpn"), RouteTo("noc")])]
    item = ticket("vpn", tags={"new"})

    assert classify(rules, item).changes(item) == {
        "category": "network",
        "group": "noc",
        "tags": frozenset({"new", "vpn"}),
    }


# -------------------------------------------------------------------------- construction


def test_classifier_rejects_duplicate_names_and_levels_the_matrix_lacks() -> None:
    with pytest.raises(ValidationError) as duplicate:
        Classifier([VPN, VPN])
    with pytest.raises(ValidationError) as level:
        Classifier([Rule("x", IsVip(), [SetImpactUrgency(impact="critical")])])

    assert duplicate.value.field == "rules[1].name"
    assert level.value.field == "rules[0].then.impact"


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Keywords("vpn"), "words"),
        (lambda: Keywords([]), "words"),
        (lambda: Keywords(["ok", " "]), "words[1]"),
        (lambda: Keywords(["ok"], fields=["body"]), "fields[0]"),
        (lambda: Regex("(unclosed"), "pattern"),
        (lambda: ChannelIs("fax"), "channels"),
        (lambda: All(), "all"),
        (lambda: RaisePriority("asap"), "to"),
        (lambda: SetImpactUrgency(), "impact"),
        (lambda: SetCategory(""), "name"),
    ],
)
def test_bad_values_raise_validation_errors(build: Any, field: str) -> None:
    with pytest.raises(ValidationError) as error:
        build()
    assert error.value.field == field


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Classifier(None), "rules"),  # type: ignore[arg-type]
        (lambda: Keywords(None), "words"),  # type: ignore[arg-type]
        (lambda: Keywords(5), "words"),  # type: ignore[arg-type]
        (lambda: Keywords(["vpn"], fields=None), "fields"),  # type: ignore[arg-type]
        (lambda: Regex("vpn", fields=5), "fields"),  # type: ignore[arg-type]
        (lambda: Not(None), "condition"),  # type: ignore[arg-type]
        (lambda: Classifier(5), "rules"),  # type: ignore[arg-type]
        (lambda: Classifier(VPN), "rules"),  # type: ignore[arg-type]
        (lambda: Classifier([1]), "rules[0]"),  # type: ignore[list-item]
        (lambda: Classifier([], sensitive_words=5), "sensitive_words"),  # type: ignore[arg-type]
        (lambda: Classifier([], sensitive_words="lawyer"), "sensitive_words"),
        (lambda: Classifier([], matrix={}), "matrix"),  # type: ignore[arg-type]
        (lambda: PriorityMatrix([1]), "matrix"),  # type: ignore[arg-type]
        (lambda: PriorityMatrix("high"), "matrix"),  # type: ignore[arg-type]
        (lambda: PriorityMatrix(5), "matrix"),  # type: ignore[arg-type]
        (lambda: Rule("r", None), "when"),  # type: ignore[arg-type]
        (lambda: Rule("r", "vpn"), "when"),  # type: ignore[arg-type]
        (lambda: Rule(None, IsVip()), "name"),  # type: ignore[arg-type]
        (lambda: Rule("r", IsVip(), None), "then"),  # type: ignore[arg-type]
        (lambda: Rule("r", IsVip(), 5), "then"),  # type: ignore[arg-type]
        (lambda: Rule("r", IsVip(), [RouteTo("a"), "b"]), "then[1]"),  # type: ignore[list-item]
        (lambda: Rule("r", IsVip(), stop="yes"), "stop"),  # type: ignore[arg-type]
        (lambda: Rule("r", IsVip(), stop=1), "stop"),  # type: ignore[arg-type]
        (lambda: FlagTeamLead(5), "reason"),  # type: ignore[arg-type]
        (lambda: FlagTeamLead(None), "reason"),  # type: ignore[arg-type]
    ],
)
def test_ill_typed_arguments_are_refused_when_built(build: Any, field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        build()
    assert refused.value.field == field


def test_well_typed_arguments_build_as_before() -> None:
    lone = Rule("r", IsVip(), RouteTo("vip"))  # type: ignore[arg-type]  # one action is a list
    generated = Classifier(
        (rule for rule in [lone]), sensitive_words=("lawyer",), matrix=PriorityMatrix()
    )

    assert lone.then == (RouteTo("vip"),)
    assert generated.rules == (lone,)
    assert Classifier([], sensitive_words=None).sensitive_words is None
    assert Rule("r", IsVip(), (), stop=True).stop
    assert FlagTeamLead().reason == ""
    assert PriorityMatrix(None) == PriorityMatrix()


# ------------------------------------------------------------------------- rules as data

DOCUMENT: dict[str, Any] = {
    "rules": [
        {"name": "vpn", "when": {"keywords": ["VPN", "断网"]}, "then": {"category": "network"}},
        {
            "name": "vip-chat",
            "when": {"all": [{"vip": True}, {"channel": ["chat"]}]},
            "then": {"route_to": "vip-desk", "raise_priority": "high", "flag_team_lead": "VIP"},
            "stop": True,
        },
        {
            "name": "billing",
            "when": {
                "any": [
                    {"keywords": ["invoice"], "fields": ["subject"]},
                    {"regex": "发票\\d+"},
                    {"not": {"tier": ["internal"]}},
                    {"category": ["billing"]},
                    {"tag": ["money"]},
                    {"field": {"name": "order_type", "equals": "bulk"}},
                ]
            },
            "then": [{"cap_priority": "normal"}, {"raise_priority": "high"}],
        },
        {
            "name": "outage",
            "when": {"keywords": ["everyone"]},
            "then": {
                "impact": "high",
                "urgency": "medium",
                "tags": ["outage"],
                "assign_to": "agent_wu",
                "fingerprint": "outage-1",
            },
        },
    ],
    "sensitive_words": ["记者", "lawyer"],
    "matrix": {
        "high": {"high": "urgent", "medium": "high"},
        "low": {"high": "normal", "medium": "low"},
    },
}


def test_a_document_round_trips() -> None:
    classifier = Classifier.from_dict(DOCUMENT)

    assert classifier.to_dict() == DOCUMENT
    again = Classifier.from_json(json.dumps(classifier.to_dict()))
    assert again.rules == classifier.rules
    assert again.matrix == classifier.matrix
    assert again.sensitive_words == ("记者", "lawyer")


def test_python_rules_round_trip_through_json() -> None:
    rules = [
        VPN,
        Rule("vip", IsVip() & ~HasTag("spam"), [RouteTo("vip"), FlagTeamLead()], stop=True),
        Rule("two", Keywords(["x"]), [AddTags("a"), AddTags("b")]),  # needs the list form
        # One object would read back as one SetImpactUrgency("high", "low"): other reasons.
        Rule("split", Keywords(["y"]), [SetImpactUrgency("high"), SetImpactUrgency(urgency="low")]),
    ]
    classifier = Classifier(rules, sensitive_words=None)

    doc = json.loads(json.dumps(classifier.to_dict()))

    assert doc["sensitive_words"] is None
    assert "matrix" not in doc
    assert doc["rules"][2]["then"] == [{"tags": ["a"]}, {"tags": ["b"]}]
    assert doc["rules"][3]["then"] == [{"impact": "high"}, {"urgency": "low"}]
    assert Classifier.from_dict(doc).rules == classifier.rules


def _with_rule(rule: dict[str, Any], at: int = 3) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {"name": f"r{i}", "when": {"vip": True}, "then": {"tags": ["x"]}} for i in range(at)
    ]
    return {"rules": [*rules, rule]}


VIP = {"vip": True}


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"when": {"any": [{"keywords": "vpn"}]}}, "when.any[0].keywords"),
        ({"when": {"any": [VIP, {"keywords": []}]}}, "when.any[1].keywords"),
        ({"when": {"keywords": ["ok", 7]}}, "when.keywords[1]"),
        ({"when": {"all": [{"regex": "(x"}]}}, "when.all[0].regex"),
        ({"when": {"not": {"colour": "red"}}}, "when.not"),
        ({"when": {"vip": "yes"}}, "when.vip"),
        ({"when": {"channel": ["fax"]}}, "when.channel"),
        ({"when": {"tier": []}}, "when.tier"),
        ({"when": {"vip": True, "fields": ["subject"]}}, "when.fields"),
        ({"when": {"keywords": ["a"], "fields": ["x"]}}, "when.fields[0]"),
        ({"when": {"field": {"name": "a"}}}, "when.field"),
        ({"when": {"field": {"name": "customer.__class__", "equals": "x"}}}, "when.field.name"),
        ({"when": VIP, "then": {"colour": 1}}, "then.colour"),
        ({"when": VIP, "then": {"raise_priority": "asap"}}, "then.raise_priority"),
        ({"when": VIP, "then": {"impact": "huge"}}, "then.impact"),
        ({"when": VIP, "then": {"urgency": 3}}, "then.urgency"),
        ({"when": VIP, "then": [{"route_to": "a"}, {"tags": "x"}]}, "then[1].tags"),
        ({"when": VIP, "then": {"flag_team_lead": 1}}, "then.flag_team_lead"),
        (
            {"when": VIP, "then": {"raise_priority": "high", "cap_priority": "low"}},
            "then.cap_priority",
        ),
        ({"when": VIP, "stop": "yes"}, "stop"),
        ({"when": VIP, "name": ""}, "name"),
        ({"when": VIP, "name": None}, "name"),
        ({"when": VIP, "name": "r0"}, "name"),
        ({"name": "no-when"}, "when"),
    ],
)
def test_malformed_documents_name_the_path(rule: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        Classifier.from_dict(_with_rule({"name": "bad", **rule}))
    assert error.value.field == f"rules[3].{field}"


def test_malformed_documents_say_what_was_expected() -> None:
    with pytest.raises(ValidationError) as error:
        Classifier.from_dict(_with_rule({"name": "x", "when": {"any": [{"keywords": "vpn"}]}}))

    assert error.value.value == "vpn"
    assert "list" in error.value.expected
    assert str(error.value).startswith("rules[3].when.any[0].keywords='vpn' is invalid")


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"rules": {}}, "rules"),
        ({"rules": [], "extra": 1}, "extra"),
        ({"rules": [], "sensitive_words": "记者"}, "sensitive_words"),
        ({"rules": [], "sensitive_words": ["ok", ""]}, "sensitive_words[1]"),
        ({"rules": [], "matrix": {"high": {"high": "asap"}}}, "matrix.high.high"),
        ({"rules": [], "matrix": {"high": {"high": "urgent"}, "low": {}}}, "matrix.low"),
        ({"rules": [], "matrix": {"high": {"high": "urgent"}, "low": {"low": "low"}}}, "matrix"),
    ],
)
def test_malformed_top_level_entries_name_the_path(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        Classifier.from_dict(doc)
    assert error.value.field == field


def test_invalid_json_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as error:
        Classifier.from_json('{"rules": [}')
    assert error.value.field == "json"


# ----------------------------------------------------------------------------- properties

ALPHABET = "abcdeｅＡＢ 断网连不上记者_-!12"
words_strategy = st.text(ALPHABET, min_size=1, max_size=6).filter(lambda w: normalize(w) != "")
text_strategy = st.text(ALPHABET, max_size=60)


@settings(max_examples=200, deadline=None)
@given(st.lists(words_strategy, min_size=1, max_size=12), text_strategy)
def test_automaton_agrees_with_the_naive_matcher(words: list[str], text: str) -> None:
    normal = [normalize(word) for word in words]
    assert Automaton(normal).find(normalize(text)) == find_naive(normal, normalize(text))


@settings(max_examples=300, deadline=None)
@given(st.lists(words_strategy, min_size=1, max_size=12), st.text(ALPHABET + "éß漢", max_size=60))
def test_finds_sensitive_agrees_with_the_naive_matcher(words: list[str], text: str) -> None:
    # ``finds_sensitive`` tests substrings first, then boundaries: the matcher's answers.
    classifier = Classifier([], sensitive_words=words)
    normal = [normalize(word) for word in words]
    assert classifier.finds_sensitive(text) == bool(find_naive(normal, normalize(text)))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.lists(words_strategy, min_size=1, max_size=4), min_size=1, max_size=5),
    text_strategy,
    text_strategy,
)
def test_classification_is_deterministic_and_its_evidence_is_real(
    groups: list[list[str]], subject: str, description: str
) -> None:
    rules = [
        Rule(f"r{i}", Keywords(words), [SetCategory(f"c{i}"), AddTags(f"t{i}")])
        for i, words in enumerate(groups)
    ]
    classifier = Classifier(rules, sensitive_words=["记者", "sue"])
    item = ticket(subject, description)

    first, second = classifier.classify(item), classifier.classify(item)

    assert first == second
    assert Classifier.from_dict(classifier.to_dict()).classify(item) == first
    texts = {"subject": normalize(subject), "description": normalize(description)}
    for reason in first.reasons:
        assert reason.fields
        assert set(reason.fields) <= set(texts)
        for word in reason.matched:
            assert any(normalize(word) in texts[field] for field in reason.fields)
