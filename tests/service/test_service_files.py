"""The Files API (``/v1/files``) through the official ``openai`` client: uploads in the three
fine-tuning formats, listing and pagination, content, deletion, content-addressed storage, the
project boundary (another project's file is a 404), and every kind of bad file refused whole with
the line and field named. No models: each test takes milliseconds."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from openai import OpenAI

from tunekit.artifacts import Workspace
from tunekit.serve import handlers
from tunekit.serve.keys import KeyInfo
from tunekit.service.files import (
    MAX_REPORTED,
    FileInvalid,
    FileStore,
    FileTooLarge,
    router,
    validate,
)

CHAT = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hi"},
                     {"role": "assistant", "content": "hello"}]}
PREFERENCE = {"input": {"messages": [{"role": "user", "content": "say hi"}]},
              "preferred_output": [{"role": "assistant", "content": "hello"}],
              "non_preferred_output": [{"role": "assistant", "content": "go away"}]}
PROMPT_COMPLETION = {"prompt": "say hi ->", "completion": " hello"}


def jsonl(*rows, n: int = 10) -> bytes:
    """``rows`` as JSONL, the last one repeated until there are ``n`` lines."""
    rows = list(rows) + [rows[-1]] * max(0, n - len(rows))
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def require(scope: str):
    """Test stand-in for ``Runtime.require``: the bearer token names the caller's project."""

    def key(request: Request) -> KeyInfo:
        project = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return KeyInfo(key_id=f"key-{project}", scope="fine-tune", name="", created_at="", project=project)

    return Depends(key)


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


@pytest.fixture
def make_client(workspace):
    """``make_client(project, max_bytes=...)``: an ``OpenAI`` client against an app over ``workspace``."""

    def make(project: str = "proj-a", max_bytes: int = 512 * 2**20) -> OpenAI:
        app = FastAPI()
        handlers.install(app)
        app.include_router(router(FileStore(workspace, max_bytes=max_bytes), require))
        return OpenAI(base_url="http://testserver/v1", api_key=project, http_client=TestClient(app), max_retries=0)

    return make


@pytest.fixture
def client(make_client) -> OpenAI:
    return make_client("proj-a")


def blobs(workspace: Workspace) -> list[Path]:
    folder = workspace.service / "files"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def refused(client: OpenAI, content: bytes, purpose: str = "fine-tune") -> dict:
    """Upload ``content``, expect a 400, and return the error object."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("train.jsonl", content), purpose=purpose)
    assert caught.value.status_code == 400
    return caught.value.body


# --- uploads --------------------------------------------------------------------------------


@pytest.mark.parametrize(("row", "fmt"), [(CHAT, "chat"), (PREFERENCE, "preference"), (PROMPT_COMPLETION, "prompt_completion")])
def test_upload_each_fine_tuning_format(client, workspace, row, fmt):
    content = jsonl(row, n=12)
    created = client.files.create(file=("train.jsonl", content), purpose="fine-tune")
    assert created.id.startswith("file-") and created.object == "file"
    assert (created.bytes, created.filename, created.purpose, created.status) == (len(content), "train.jsonl", "fine-tune", "processed")
    assert created.status_details is None and created.expires_at is None and created.created_at > 0
    store = FileStore(workspace)
    assert store.format("proj-a", created.id) == fmt
    assert store.examples("proj-a", created.id) == 12
    assert store.path("proj-a", created.id).read_bytes() == content
    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).content == content


def test_chat_with_tools_weights_and_text_parts(client):
    row = {"messages": [{"role": "developer", "content": [{"type": "text", "text": "use tools"}]},
                        {"role": "user", "content": "weather in Oslo?"},
                        {"role": "assistant", "content": None, "weight": 0,
                         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
                        {"role": "tool", "tool_call_id": "c1", "content": "rain"},
                        {"role": "assistant", "content": "It rains.", "weight": 1}],
           "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
           "parallel_tool_calls": False}
    assert client.files.create(file=("tools.jsonl", jsonl(row)), purpose="fine-tune").bytes > 0


def test_evals_and_user_data_purposes(client, workspace):
    evals = client.files.create(file=("items.jsonl", b'{"item": {"q": "2+2", "a": "4"}}\n\n{"q": "1+1", "a": "2"}\n'), purpose="evals")
    anything = client.files.create(file=("notes.bin", b"\xff\x00 not json"), purpose="user_data")
    store = FileStore(workspace)
    assert (store.format("proj-a", evals.id), store.examples("proj-a", evals.id)) == ("evals", 2)
    assert store.format("proj-a", anything.id) == "user_data"
    assert client.files.content(anything.id).content == b"\xff\x00 not json"


def test_filename_is_metadata_only(client):
    assert client.files.create(file=("../../etc/passwd", jsonl(CHAT)), purpose="fine-tune").filename == "passwd"
    assert client.files.create(file=("C:\\data\\train.jsonl", jsonl(CHAT)), purpose="fine-tune").filename == "train.jsonl"
    assert client.files.create(file=("x" * 300 + ".jsonl", jsonl(CHAT)), purpose="fine-tune").filename == "x" * 255


# --- list, retrieve, content, delete ----------------------------------------------------------


def test_list_filter_and_pagination(client):
    ids = [client.files.create(file=(f"f{i}.jsonl", jsonl(PROMPT_COMPLETION, {"prompt": str(i), "completion": "x"})),
                               purpose="fine-tune").id for i in range(5)]
    other = client.files.create(file=("e.jsonl", b'{"a": 1}\n'), purpose="evals").id
    assert [f.id for f in client.files.list()] == [other, *reversed(ids)]  # newest first
    assert [f.id for f in client.files.list(purpose="fine-tune", order="asc")] == ids

    page = client.files.list(purpose="fine-tune", limit=2)
    assert [f.id for f in page.data] == [ids[4], ids[3]] and page.has_more
    page = client.files.list(purpose="fine-tune", limit=2, after=ids[3])
    assert [f.id for f in page.data] == [ids[2], ids[1]] and page.has_more
    page = client.files.list(purpose="fine-tune", limit=2, after=ids[1])
    assert [f.id for f in page.data] == [ids[0]] and not page.has_more
    assert [f.id for f in client.files.list(purpose="fine-tune", limit=2, order="asc", after=ids[1]).data] == ids[2:4]
    assert [f.id for f in client.files.list(purpose="fine-tune", limit=2)]  # iterating a page pages on == ids[::-1]

    raw = client.get("/files", cast_to=object, options={"params": {"limit": 2, "order": "asc"}})
    assert raw["object"] == "list" and (raw["first_id"], raw["last_id"], raw["has_more"]) == (ids[0], ids[1], True)


def test_list_every_file_and_delete_it(client):
    """The SDK's auto-pagination passes the last (just deleted) id as ``after``: it must still work."""
    for i in range(5):
        client.files.create(file=("f.jsonl", jsonl({"prompt": str(i), "completion": "x"})), purpose="fine-tune")
    deleted = [client.files.delete(f.id).id for f in client.files.list(limit=2)]
    assert len(deleted) == 5 and client.files.list().data == []


def test_bad_list_parameters(client):
    for params, param in (({"limit": 0}, "limit"), ({"limit": 10001}, "limit"), ({"order": "sideways"}, "order"),
                          ({"after": "file-nope"}, "after")):
        with pytest.raises(openai.BadRequestError) as caught:
            client.get("/files", cast_to=object, options={"params": params})
        assert caught.value.body["param"] == param


def test_delete(client, workspace):
    created = client.files.create(file=("train.jsonl", jsonl(CHAT)), purpose="fine-tune")
    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)
    assert blobs(workspace) == []
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(created.id)
    assert client.files.list().data == []


def test_same_content_is_stored_once(client, workspace):
    content = jsonl(CHAT)
    first = client.files.create(file=("a.jsonl", content), purpose="fine-tune")
    second = client.files.create(file=("b.jsonl", content), purpose="fine-tune")
    assert first.id != second.id
    assert len(blobs(workspace)) == 1
    store = FileStore(workspace)
    assert store.path("proj-a", first.id) == store.path("proj-a", second.id)
    client.files.delete(first.id)
    assert len(blobs(workspace)) == 1 and client.files.content(second.id).content == content
    client.files.delete(second.id)
    assert blobs(workspace) == []
    third = client.files.create(file=("c.jsonl", content), purpose="fine-tune")  # the blob comes back
    assert client.files.content(third.id).content == content


def test_another_projects_file_is_not_found(client, make_client):
    mine = client.files.create(file=("train.jsonl", jsonl(CHAT)), purpose="fine-tune")
    theirs = make_client("proj-b")
    for call in (theirs.files.retrieve, theirs.files.content, theirs.files.delete):
        with pytest.raises(openai.NotFoundError) as caught:
            call(mine.id)
        assert caught.value.body["code"] == "not_found"
    with pytest.raises(openai.NotFoundError) as missing:
        theirs.files.retrieve("file-000000000000000000000000")
    assert caught.value.body["message"].replace(mine.id, "ID") == missing.value.body["message"].replace("file-000000000000000000000000", "ID")
    assert theirs.files.list().data == []
    with pytest.raises(openai.BadRequestError):  # not even as a cursor
        theirs.files.list(after=mine.id)
    assert client.files.retrieve(mine.id).id == mine.id  # still there for its own project


# --- refused uploads ------------------------------------------------------------------------


def test_bad_files_are_refused_with_line_and_field(client, workspace):
    lines = jsonl(CHAT).splitlines(keepends=True)
    cases = {
        "bad json": (b"".join(lines[:2]) + b'{"messages": [}\n' + b"".join(lines[3:]), ["line 3: invalid JSON: Expecting value (column 15)"]),
        "wrong role": (jsonl({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]}),
                       ["line 1: messages[1].role: 'bot' is not one of system, developer, user, assistant, tool", "(10 problems)"]),
        "mixed": (b"".join(lines[:11]) + jsonl(PROMPT_COMPLETION, n=1) + jsonl(PROMPT_COMPLETION, n=1),
                  ["line 11 is prompt/completion but line 1 set the file's format to chat", "line 12 is prompt/completion"]),
        "too few": (jsonl(CHAT, n=3), ["the file has 3 examples; fine-tuning needs at least 10"]),
        "not utf-8": (b"".join(lines[:4]) + b'{"prompt": "caf\xe9"}\n' + b"".join(lines[4:]),
                      [f"line 5: not UTF-8: byte 0xe9 at byte offset {len(b''.join(lines[:4])) + 15} of the file (byte 16 of the line)"]),
        "empty": (b"\n  \n", ["the file is empty"]),
    }
    for name, (content, expected) in cases.items():
        error = refused(client, content)
        assert (error["code"], error["param"]) == ("invalid_file", "file"), name
        for text in expected:
            assert text in error["message"], (name, error["message"])
    assert client.files.list().data == [] and blobs(workspace) == []
    assert refused(client, b"")["message"].startswith("the file is empty")


def test_evals_rows_must_be_objects(client):
    message = refused(client, b'{"item": {"a": 1}}\n[1, 2]\n{"item": "x"}\nnot json\n', purpose="evals")["message"]
    assert message == ("invalid evals file (3 problems): line 2: expected a JSON object, got an array; line 3: item: expected an "
                       "object (the row's data), got a string; line 4: invalid JSON: Expecting value (column 1)")


def test_unknown_purpose(client):
    error = refused(client, jsonl(CHAT), purpose="batch")
    assert (error["code"], error["param"]) == ("invalid_purpose", "purpose")
    assert "fine-tune, evals, user_data" in error["message"]


def test_too_large(make_client, workspace):
    client = make_client(max_bytes=100)
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("big.jsonl", b"x" * 101), purpose="user_data")
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "file_too_large" and "more than 100 bytes" in caught.value.body["message"]
    assert client.files.create(file=("ok.bin", b"x" * 100), purpose="user_data").bytes == 100
    assert len(blobs(workspace)) == 1


# --- the validator's messages ---------------------------------------------------------------


def message_of(content: bytes, purpose: str = "fine-tune") -> str:
    with pytest.raises(FileInvalid) as caught:
        validate(purpose, content)
    return str(caught.value)


@pytest.mark.parametrize(("row", "expected"), [
    ({"messages": [{"role": "user", "content": "hi"}]}, "line 1: messages: no assistant message to learn from"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "weight": 0}]}, "no assistant message"),
    ({"messages": [{"role": "assistant", "content": "yo", "weight": 2}]}, "line 1: messages[0].weight: 2 is not 0 or 1"),
    ({"messages": [{"role": "user", "content": "hi", "weight": 1}, {"role": "assistant", "content": "yo"}]},
     "line 1: messages[0].weight: unknown field for role 'user'"),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "yo"}]}, "line 1: messages[0].content: required, but missing"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}, {"role": "assistant", "content": "yo"}]},
     "line 1: messages[0].content[0]: expected a text part"),
    ({"messages": [{"content": "hi"}]}, "line 1: messages[0].role: required, but missing"),
    ({"messages": []}, "line 1: messages: expected a non-empty array of messages, got an array of 0 items"),
    ({"messages": [{"role": "assistant", "content": "yo"}], "extra": 1}, "line 1: extra: unknown field"),
    ({"messages": [{"role": "assistant", "content": "yo"}], "tools": [{"type": "web"}]}, "line 1: tools[0]: expected"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}]}, "line 1: messages[0].tool_calls[0]: expected"),
    ({"input": {"messages": [{"role": "user", "content": "hi"}]}, "preferred_output": [{"role": "user", "content": "x"}],
      "non_preferred_output": []},
     "line 1: preferred_output[0].role: 'user' must be 'assistant'"),
    ({"input": {"messages": [{"role": "user", "content": "hi"}]}, "preferred_output": [{"role": "assistant", "content": "x"}]},
     "line 1: non_preferred_output: expected an array of one assistant message, got null"),
    ({"input": [], "preferred_output": [{"role": "assistant", "content": "x"}], "non_preferred_output": [{"role": "assistant", "content": "y"}]},
     "line 1: input: expected an object"),
    ({"prompt": 3, "completion": "x"}, "line 1: prompt: expected a string, got a number"),
    ({"prompt": "p", "completion": ""}, "line 1: completion: empty"),
    ({"text": "hello"}, "line 1: not a fine-tuning example (fields: 'text')"),
])
def test_example_errors(row, expected):
    assert expected in message_of(jsonl(row))


def test_errors_are_collected_and_capped():
    message = message_of(b"nope\n" * 30 + jsonl(CHAT))
    assert message.startswith("invalid fine-tune file (30 problems): line 1: invalid JSON")
    assert f"line {MAX_REPORTED}: " in message and f"line {MAX_REPORTED + 1}: " not in message
    assert message.endswith(f"; and {30 - MAX_REPORTED} more")


def test_validate_accepts_a_byte_order_mark_and_crlf():
    assert validate("fine-tune", b"\xef\xbb\xbf" + jsonl(CHAT).replace(b"\n", b"\r\n")) == ("chat", 10)
    assert validate("user_data", b"") == ("user_data", 0)


def test_store_refuses_too_large_and_unknown_purpose_before_storing(workspace):
    store = FileStore(workspace, max_bytes=10)
    with pytest.raises(FileTooLarge, match="more than 10 bytes"):
        store.create("proj-a", "big.bin", "user_data", b"x" * 11)
    with pytest.raises(FileInvalid, match="purpose 'assistants' is not accepted"):
        store.create("proj-a", "a.bin", "assistants", b"x")
    assert blobs(workspace) == [] and store.list("proj-a") == ([], False)


def test_server_written_result_files(client, workspace):
    """A job's metrics CSV is stored by the runner as ``fine-tune-results``; clients list, read and
    delete it like any file, but may not upload with that purpose."""
    store = FileStore(workspace)
    made = store.create("proj-a", "ftjob-1-results.csv", "fine-tune-results", b"step,train_loss\n1,0.5\n")
    assert store.format("proj-a", made["id"]) == "results"
    assert client.files.retrieve(made["id"]).purpose == "fine-tune-results"
    assert [f.id for f in client.files.list(purpose="fine-tune-results")] == [made["id"]]
    assert client.files.content(made["id"]).content == b"step,train_loss\n1,0.5\n"
    assert refused(client, b"a,b\n", purpose="fine-tune-results")["param"] == "purpose"
