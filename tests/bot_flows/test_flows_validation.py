"""Flow files are validated on load, and every problem names the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot_flows.flows import FlowValidationError, load_flow_sources, load_flows

FLOWS_DIR = Path(__file__).resolve().parents[2] / "config" / "flows"

REST = """\
flow: main
default: true
start: idle
states:
  idle:
    fallback: {reply: hi}
"""


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def errors_for(text: str, label: str = "flows/ticket.yaml", with_rest: bool = True) -> list[str]:
    sources = [("flows/main.yaml", REST)] if with_rest else []
    with pytest.raises(FlowValidationError) as exc:
        load_flow_sources([*sources, (label, text)])
    return [str(e) for e in exc.value.errors]


def test_the_shipped_flows_are_valid() -> None:
    flows = load_flows(FLOWS_DIR)
    assert set(flows.flows) == {"faq", "ticket", "handoff"}
    assert flows.rest == "faq:answering"


TICKET = """\
flow: ticket
start: ask
triggers:
  - keywords: [工单]
states:
  ask:
    actions:
      - sendd: 请描述问题
      - reply: {zh: 好的, fr: bon}
    collect:
      validate: [phone, fax]
      var: x
      next: done
      on_fail: nowhere
      retries: 3
  done:
    then: main:idel
"""


def test_each_problem_is_reported_with_file_and_line() -> None:
    errs = errors_for(TICKET)
    text = "\n".join(errs)
    assert f"flows/ticket.yaml:{line_of(TICKET, 'sendd')}: unknown action 'sendd'" in text
    assert "flows/ticket.yaml:9: action 'reply' must be a text or a mapping with 'zh' and/or 'en' texts" in text
    assert "flows/ticket.yaml:11: unknown validator 'fax'" in text
    assert "flows/ticket.yaml:15: unknown key 'retries' in 'collect'" in text
    assert "flows/ticket.yaml:14: unknown state 'nowhere' in flow 'ticket'" in text
    assert "flows/ticket.yaml:17: unknown state 'idel' in flow 'main' (did you mean 'idle'?)" in text
    assert len(errs) == 6


def test_a_misspelt_action_gets_a_suggestion() -> None:
    bad = REST + "    actions:\n      - replly: hi\n"
    (err,) = errors_for(bad, "flows/main.yaml", with_rest=False)
    assert err == "flows/main.yaml:8: unknown action 'replly' (did you mean 'reply'?)"


@pytest.mark.parametrize(("snippet", "expected"), [
    ("    transitions:\n      - regex: '([a-z'\n        goto: idle\n",
     "flows/main.yaml:8: bad regex '([a-z': unterminated character set at position 1"),
    ("    transitions:\n      - payload: x\n        goto: nowhere\n",
     "flows/main.yaml:9: unknown state 'nowhere' in flow 'main'"),
    ("    transitions:\n      - goto: idle\n",
     "flows/main.yaml:8: a transition needs a condition"),
    ("    transitions:\n      - payload: x\n        goto: billing:start\n",
     "flows/main.yaml:9: unknown flow 'billing' in target 'billing:start'"),
    ("    colour: blue\n", "flows/main.yaml:7: unknown key 'colour' in state 'idle'"),
    ("    timeout: {seconds: -5}\n", "flows/main.yaml:7: 'seconds' must be a positive number"),
    ("    transitions:\n      - business_hours: maybe\n",
     "flows/main.yaml:8: 'business_hours' must be 'open' or 'closed'"),
    ("    then: idle\n    faq: {clarify: a, not_found: b}\n",
     "flows/main.yaml:7: state 'idle': 'then' moves on at once"),
    ("    http: {url: 'ftp://x', on_error: idle, branches: [{status: 2x0, goto: idle}]}\n",
     "flows/main.yaml:7: 'url' must start with http:// or https://"),
    ("    http: {url: 'https://x', on_error: idle, branches: [{status: 2x0, goto: idle}]}\n",
     "flows/main.yaml:7: bad status '2x0'"),
    ("    fallback: {reply: a}\n", "flows/main.yaml:7: duplicate key 'fallback' in state 'idle'"),
    ("    on: {seconds: 5}\n", "quote it"),
])
def test_state_level_mistakes(snippet: str, expected: str) -> None:
    errs = errors_for(REST + snippet, "flows/main.yaml", with_rest=False)
    assert any(e.startswith(expected) or expected in e for e in errs), errs


def test_yaml_syntax_errors_point_to_the_line() -> None:
    (err,) = errors_for("flow: x\nstates:\n  a: [unclosed\n", "flows/broken.yaml")
    assert err.startswith("flows/broken.yaml:4: invalid YAML") or err.startswith("flows/broken.yaml:3: invalid YAML")


def test_flow_set_level_mistakes() -> None:
    no_default = REST.replace("default: true\n", "")
    assert errors_for(no_default, "flows/main.yaml", with_rest=False) == [
        "flows/main.yaml:1: no flow is marked 'default: true'"]
    other = REST.replace("flow: main", "flow: other")
    assert "only one flow may be the default" in errors_for(other, "flows/other.yaml")[0]
    dup = REST.replace("default: true\n", "")
    assert errors_for(dup, "flows/copy.yaml") == [
        "flows/copy.yaml:1: flow 'main' is already defined in flows/main.yaml:1"]
    assert errors_for("start: a\nstates: {}\n", "flows/x.yaml") == [
        "flows/x.yaml:1: the flow is missing required key 'flow'"]


def test_load_flows_labels_files_by_folder_and_name(tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "main.yaml").write_text(REST + "    actions:\n      - sendd: x\n", encoding="utf-8")
    with pytest.raises(FlowValidationError, match=r"flows/main.yaml:8: unknown action 'sendd'"):
        load_flows(folder)
