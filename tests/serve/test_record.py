"""``tunekit record``: an incumbent model's answers, recorded through the official client from an
OpenAI-compatible endpoint (here tunekit's own server with the trained greeter), become a chat
training file; an interrupted recording continues where it stopped; bad prompts name their line."""

from __future__ import annotations

import json

import openai
import pytest

from tunekit.data.record import read_prompts, record
from tunekit.errors import DataError
from tunekit.service.files import validate

GREETINGS = {"say hi": "hello there", "say bye": "goodbye my friend"}  # what the greeter learnt


def test_recorded_answers_become_a_fine_tune_file_and_a_rerun_continues(gen_client, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "say hi"}, {"messages": [{"role": "user", "content": "say bye"}]}] * 6
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "recorded.jsonl"
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=gen_client, max_retries=0)

    # an earlier run stopped after 3 answers: they are kept, the other 9 recorded
    (tmp_path / "three.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    early = record(client, "greeter", tmp_path / "three.jsonl", out, max_tokens=8)
    done = record(client, "greeter", prompts, out, max_tokens=8)
    assert (early.recorded, early.kept) == (3, 0) and (done.recorded, done.kept) == (9, 3)
    assert done.prompt_tokens > 0 and done.completion_tokens > 0

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 12
    answers = [line["messages"][-1] for line in lines]
    assert all(a["role"] == "assistant" for a in answers)
    assert answers[0]["content"] == GREETINGS["say hi"] and answers[1]["content"] == GREETINGS["say bye"]  # what the model says
    assert lines[1]["messages"][0] == {"role": "user", "content": "say bye"}
    assert validate("fine-tune", out.read_bytes()) == ("chat", 12)  # uploadable as it is
    meta = json.loads(out.with_name("recorded.jsonl.meta.json").read_text())
    assert meta["model"] == "greeter" and meta["answers"] == 12

    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"prompt": "something else"}) + "\n")
    with pytest.raises(DataError, match="line 1: recorded for another prompt"):
        record(client, "greeter", other, out)


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "line 2: not valid JSON"),
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}', "line 2: messages[1].role: the conversation must end with a user turn"),
    ('{"messages": [{"role": "bot", "content": "hi"}]}', "line 2: messages[0]: expected"),
    ('{"text": "hi"}', 'line 2: expected {"messages": [...]} or {"prompt": "..."}'),
])
def test_bad_prompts_name_their_line(tmp_path, line, message):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "fine"}\n' + line + "\n")
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]").replace("{", r"\{").replace("}", r"\}").replace(".", r"\.")):
        read_prompts(path)
