"""Generation data: every layout becomes canonical chat rows, and every bad row is a DataError with its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunekit.data.chat import read_conversations, render_plain
from tunekit.errors import DataError

DEMO = Path("/work/shared/data/alpaca_demo/alpaca_en_demo.json")


def chat(question: str = "hi", answer: str = "hello") -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def good(n: int = 10) -> list[dict]:
    return [chat(f"question {i}", f"answer {i}") for i in range(n)]


def write_jsonl(tmp_path: Path, rows: list, name: str = "train.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows), encoding="utf-8")
    return path


def error(path: Path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        read_conversations(path, **kwargs)
    return str(info.value)


def bad_row_error(tmp_path: Path, row, **kwargs) -> str:
    """The error for ``row`` placed on line 3, after two good rows."""
    return error(write_jsonl(tmp_path, [*good(2), row, *good(8)]), **kwargs)


# happy paths ------------------------------------------------------------------------------------

def test_chat_rows_get_weights_ids_and_lines(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "be brief", "name": "sys"},
                          {"role": "user", "content": "a\r\nb"}, {"role": "assistant", "content": " x "}]}, *good(9)]
    path = tmp_path / "train.jsonl"
    path.write_text("\n" + "\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")  # blank line 1 is skipped
    out = read_conversations(path, layout="chat")
    assert len(out) == 10 and out[0]["line"] == 2 and out[9]["line"] == 11
    assert out[0]["messages"] == [{"role": "system", "content": "be brief", "weight": 0},
                                  {"role": "user", "content": "a\nb", "weight": 0},
                                  {"role": "assistant", "content": " x ", "weight": 1}]
    assert len(out[0]["id"]) == 16 and int(out[0]["id"], 16) >= 0


def test_explicit_weights_are_kept(tmp_path):
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "draft", "weight": 0},
                        {"role": "user", "content": "better"}, {"role": "assistant", "content": "final", "weight": 1}]}
    out = read_conversations(write_jsonl(tmp_path, [row, *good(9)]))
    assert [m["weight"] for m in out[0]["messages"]] == [0, 0, 0, 1]


def test_alpaca_joins_input_and_auto_detects(tmp_path):
    rows = [{"instruction": "Translate", "input": "hola", "output": "hello"},
            *({"instruction": f"Say {i}", "input": "", "output": f"{i}"} for i in range(9))]
    out = read_conversations(write_jsonl(tmp_path, rows))
    assert out[0]["messages"] == [{"role": "user", "content": "Translate\n\nhola", "weight": 0},
                                  {"role": "assistant", "content": "hello", "weight": 1}]
    assert out[1]["messages"][0]["content"] == "Say 0"
    assert read_conversations(write_jsonl(tmp_path, rows), layout="alpaca") == out


def test_alpaca_without_input_key(tmp_path):
    out = read_conversations(write_jsonl(tmp_path, [{"instruction": "Do", "output": "done"}]), layout="alpaca", min_examples=1)
    assert out[0]["messages"][0] == {"role": "user", "content": "Do", "weight": 0}


def test_prompt_completion_with_custom_columns_and_auto(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(10)]
    out = read_conversations(write_jsonl(tmp_path, rows), prompt_column="question", completion_column="answer")
    assert out[3]["messages"] == [{"role": "user", "content": "q3", "weight": 0}, {"role": "assistant", "content": "a3", "weight": 1}]
    plain = read_conversations(write_jsonl(tmp_path, [{"prompt": "p", "completion": "c"}] * 10), layout="prompt_completion")
    assert render_plain(plain[0]["messages"]) == "user: p\nassistant: c"


def test_system_prompt_is_inserted_only_where_there_is_none(tmp_path):
    with_system = {"messages": [{"role": "system", "content": "own"}, *chat()["messages"]]}
    out = read_conversations(write_jsonl(tmp_path, [with_system, *good(9)]), system_prompt="You help.")
    assert [m["content"] for m in out[0]["messages"]] == ["own", "hi", "hello"]
    assert out[1]["messages"][0] == {"role": "system", "content": "You help.", "weight": 0}
    assert render_plain(out[1]["messages"]) == "system: You help.\nuser: question 0\nassistant: answer 0"


def test_ids_are_stable_and_equal_for_identical_examples(tmp_path):
    rows = [chat("same", "row"), chat("same", "row"), chat("same", "other"), *good(7)]
    first = read_conversations(write_jsonl(tmp_path, rows))
    second = read_conversations(write_jsonl(tmp_path, rows, "again.jsonl"))
    assert [r["id"] for r in first] == [r["id"] for r in second]
    assert first[0]["id"] == first[1]["id"] != first[2]["id"]
    alpaca = read_conversations(write_jsonl(tmp_path, [{"instruction": "same", "output": "row"}] * 10, "a.jsonl"))
    assert alpaca[0]["id"] == first[0]["id"]  # the same conversation, whatever layout it came in


def test_json_list_file(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps([{"instruction": f"i{n}", "input": "", "output": "o"} for n in range(10)], indent=2), encoding="utf-8")
    out = read_conversations(path)
    assert [r["line"] for r in out[:2]] == [2, 7]


@pytest.mark.skipif(not DEMO.is_file(), reason=f"{DEMO} not present (shared data is optional)")
def test_real_alpaca_demo_file():
    out = read_conversations(DEMO)
    assert len(out) == 999 and out[0]["line"] == 2
    assert out[0]["messages"][0]["content"] == "Describe a process of making crepes."


# file-level errors ------------------------------------------------------------------------------

def test_unsupported_extension(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("prompt,completion\n", encoding="utf-8")
    msg = error(path)
    assert "train.txt" in msg and ".jsonl" in msg and ".csv" in msg and "`data.format`" in msg


def test_csv_with_a_header_and_no_rows(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("prompt,completion\n", encoding="utf-8")
    assert "train.csv: has a header row (line 1) but no data rows" in error(path)


def test_json_file_that_is_not_a_list(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"data": []}), encoding="utf-8")
    msg = error(path)
    assert "line 1" in msg and "list" in msg and '"data"' in msg


def test_invalid_json_in_json_file_names_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('[\n  {"prompt": "a", "completion": "b"},\n  {"prompt": }\n]\n', encoding="utf-8")
    assert "train.json line 3: not valid JSON" in error(path)


def test_json_list_bad_element_names_the_line_it_starts_on(tmp_path):
    rows = [{"instruction": f"i{n}", "input": "", "output": "o"} for n in range(12)]
    rows[4] = {"instruction": "i4", "input": "", "output": ""}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")  # each element spans 5 lines, from line 2
    msg = error(path)
    assert "train.json line 22:" in msg and '"output" is empty' in msg


def test_jsonl_line_that_is_not_json(tmp_path):
    msg = bad_row_error(tmp_path, '{"messages": [')
    assert "train.jsonl line 3: not valid JSON" in msg


def test_row_that_is_not_an_object(tmp_path):
    msg = bad_row_error(tmp_path, ["a", "list"])
    assert "train.jsonl line 3: expected a JSON object" in msg and "a list" in msg


def test_auto_layout_with_unknown_keys_lists_the_three_shapes(tmp_path):
    msg = error(write_jsonl(tmp_path, [{"question": "q", "answer": "a"}] * 10))
    assert "train.jsonl line 1" in msg and '"question"' in msg
    for shape in ("messages", "instruction", "prompt_completion", "data.layout"):
        assert shape in msg


def test_fewer_than_min_examples(tmp_path):
    msg = error(write_jsonl(tmp_path, good(7)))
    assert "found 7 examples" in msg and "at least 10" in msg
    assert len(read_conversations(write_jsonl(tmp_path, good(7)), min_examples=7)) == 7


def test_many_bad_rows_list_ten_and_count_the_rest(tmp_path):
    msg = error(write_jsonl(tmp_path, [*good(10), *[{"messages": []}] * 15]))
    assert "15 problems" in msg and "... and 5 more" in msg
    assert "line 20:" in msg and "line 21:" not in msg


# chat row errors --------------------------------------------------------------------------------

def test_chat_row_without_messages(tmp_path):
    msg = bad_row_error(tmp_path, {"conversation": []}, layout="chat")
    assert "train.jsonl line 3" in msg and 'no "messages"' in msg and '"conversation"' in msg


def test_chat_row_with_empty_messages(tmp_path):
    msg = bad_row_error(tmp_path, {"messages": []})
    assert "train.jsonl line 3" in msg and "empty list" in msg


def test_messages_not_a_list(tmp_path):
    msg = bad_row_error(tmp_path, {"messages": "hi"})
    assert "train.jsonl line 3" in msg and '"messages" is a string' in msg


def test_unknown_top_level_key_in_chat_row(tmp_path):
    msg = bad_row_error(tmp_path, {**chat(), "tools": []})
    assert "train.jsonl line 3" in msg and '"tools"' in msg and "allowed keys: messages" in msg and "tools are not supported" in msg


def test_message_that_is_not_an_object(tmp_path):
    msg = bad_row_error(tmp_path, {"messages": ["hi", {"role": "assistant", "content": "x"}]})
    assert "train.jsonl line 3: message 1 is a string" in msg


def test_message_without_role(tmp_path):
    msg = bad_row_error(tmp_path, {"messages": [{"content": "q"}, {"role": "assistant", "content": "a"}]})
    assert "train.jsonl line 3: message 1" in msg and 'no "role"' in msg


def test_message_without_content(tmp_path):
    msg = bad_row_error(tmp_path, {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]})
    assert "train.jsonl line 3: message 1" in msg and 'no "content"' in msg


def test_null_content_says_tools_are_not_supported(tmp_path):
    msg = bad_row_error(tmp_path, {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]})
    assert "train.jsonl line 3: message 2" in msg and "null" in msg and "tool calls" in msg


def test_content_that_is_not_a_string(tmp_path):
    msg = bad_row_error(tmp_path, {"messages": [{"role": "user", "content": [{"type": "text"}]}, {"role": "assistant", "content": "a"}]})
    assert "train.jsonl line 3: message 1" in msg and "not a string" in msg


def test_unknown_key_in_message(tmp_path):
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "tool_calls": []}]}
    msg = bad_row_error(tmp_path, row)
    assert "train.jsonl line 3: message 2" in msg and '"tool_calls"' in msg and "role, content, name, weight" in msg


def test_unknown_role(tmp_path):
    row = {"messages": [{"role": "tool", "content": "q"}, {"role": "assistant", "content": "a"}]}
    msg = bad_row_error(tmp_path, row)
    assert "train.jsonl line 3: message 1" in msg and '"tool"' in msg and "system, user, assistant" in msg


@pytest.mark.parametrize("weight", [2, 0.5, "1", True])
def test_weight_must_be_0_or_1(tmp_path, weight):
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": weight}]}
    msg = bad_row_error(tmp_path, row)
    assert "train.jsonl line 3: message 2" in msg and '"weight"' in msg and "must be 0" in msg


def test_weight_1_on_a_user_message(tmp_path):
    row = {"messages": [{"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]}
    msg = bad_row_error(tmp_path, row)
    assert "train.jsonl line 3: message 1 is a user message" in msg and "only assistant" in msg


def test_no_assistant_message(tmp_path):
    msg = bad_row_error(tmp_path, {"messages": [{"role": "user", "content": "q"}]})
    assert "train.jsonl line 3" in msg and "no assistant message" in msg


def test_no_assistant_message_with_weight_1(tmp_path):
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]}
    msg = bad_row_error(tmp_path, row)
    assert "train.jsonl line 3" in msg and "weight 0" in msg and "nothing to train on" in msg


def test_empty_assistant_content(tmp_path):
    msg = bad_row_error(tmp_path, chat("q", ""))
    assert "train.jsonl line 3: message 2" in msg and "empty content" in msg


# alpaca and prompt/completion errors ------------------------------------------------------------

def test_alpaca_missing_output(tmp_path):
    msg = bad_row_error(tmp_path, {"instruction": "do"}, layout="alpaca")
    assert 'train.jsonl line 3: "output" is missing' in msg


def test_alpaca_field_not_a_string(tmp_path):
    msg = bad_row_error(tmp_path, {"instruction": ["do"], "output": "x"}, layout="alpaca")
    assert 'train.jsonl line 3: "instruction" is a list, not a string' in msg


def test_alpaca_empty_output(tmp_path):
    msg = bad_row_error(tmp_path, {"instruction": "do", "input": "", "output": "  "}, layout="alpaca")
    assert 'train.jsonl line 3: "output" is empty' in msg


def test_alpaca_unknown_key(tmp_path):
    msg = bad_row_error(tmp_path, {"instruction": "do", "output": "x", "history": []}, layout="alpaca")
    assert "train.jsonl line 3" in msg and '"history"' in msg and "instruction, input, output" in msg


def test_prompt_completion_missing_completion(tmp_path):
    msg = bad_row_error(tmp_path, {"prompt": "p"}, layout="prompt_completion")
    assert 'train.jsonl line 3: "completion" is missing' in msg


def test_prompt_completion_not_a_string_and_empty(tmp_path):
    msg = bad_row_error(tmp_path, {"prompt": 3, "completion": ""}, layout="prompt_completion")
    assert '"prompt" is a number, not a string' in msg and '"completion" is empty' in msg and "line 3" in msg


def test_prompt_completion_unknown_key(tmp_path):
    msg = bad_row_error(tmp_path, {"prompt": "p", "completion": "c", "label": "x"}, layout="prompt_completion")
    assert "train.jsonl line 3" in msg and '"label"' in msg and "allowed keys: prompt, completion" in msg


def test_auto_layout_flags_rows_of_another_layout(tmp_path):
    msg = error(write_jsonl(tmp_path, [*good(10), {"prompt": "p", "completion": "c"}]))
    assert "train.jsonl line 11" in msg and '"prompt"' in msg
