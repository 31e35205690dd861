"""Bodies of the OpenAI-compatible routes, in OpenAI's own shapes, as they appear at ``/docs``.

Requests accept every field the official ``openai`` client can send. Fields that change nothing
here (``user``, penalties, ``logit_bias``, ``response_format``, ...) are declared, documented and
ignored; fields this server cannot honour (``tools``, ``n`` > 1, ``logprobs``, ...) are declared
so that ``openai_routes`` can refuse them with a 422 that says so; any other field is ignored with a
warning in the server log, as vLLM does, so a newer client never breaks the server.

``messages``, ``prompt`` and ``stop`` are declared with their full shape for the docs but checked
by hand in ``openai_routes``, so a bad one gets one message naming the item (``messages[1].content:
...``) instead of one error per branch of a union.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SkipValidation

Ignored = SkipValidation[Any]
IGNORED = "Accepted for compatibility with OpenAI's API and ignored."


class TextPart(BaseModel):
    """One text part of a message's content; other part types (images, audio, files) are refused."""

    type: Literal["text"] = Field(..., description="Always `text`.")
    text: str = Field(..., description="The text.")


class ChatMessage(BaseModel):
    """One turn of the conversation."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"] = Field(..., description="Who speaks; `developer` is treated as `system`. `tool` turns are refused.")
    content: str | list[TextPart] = Field(..., description="The text, or a list of text parts joined with newlines.")
    name: str | None = Field(None, description=IGNORED)


class StreamOptions(BaseModel):
    """Options of a streamed answer."""

    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = Field(None, description="Send one more chunk before `data: [DONE]`, with empty `choices` and the request's `usage`.")


class _Sampling(BaseModel):
    """Fields shared by chat completions and completions."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(..., description="The base model id (PEFT models: the untouched base model) or an adapter name, as listed by `GET /v1/models`.")
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature; 0 decodes greedily (deterministic). Default 1, as in OpenAI's API.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling: sample from the most probable tokens whose probabilities add up to `top_p`. Default 1.")
    stop: SkipValidation[str | list[str] | None] = Field(None, description="A string or a list of strings; the answer ends before the first one it would contain (`finish_reason: stop`).")
    n: int | None = Field(None, description="Number of answers; only 1 is supported.")
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1, description="Seed for sampling: the same request with the same seed gets the same answer. From -2**63 to 2**64 - 1 (what PyTorch takes).")
    stream: bool | None = Field(False, description="Send the answer as server-sent events (`data: {chunk}`), ending with `data: [DONE]`.")
    stream_options: StreamOptions | None = Field(None, description="Options of a streamed answer.")
    context: str | None = Field(None, description="tunekit extension: the source text the answer must be grounded in; the grounding guardrail checks the answer against it.")
    user: Ignored = Field(None, description=IGNORED)
    presence_penalty: Ignored = Field(None, description=IGNORED)
    frequency_penalty: Ignored = Field(None, description=IGNORED)
    logit_bias: Ignored = Field(None, description=IGNORED)


class ChatCompletionRequest(_Sampling):
    """A conversation for the model to continue with one assistant turn."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{"model": "greeter", "messages": [{"role": "user", "content": "say hi"}], "max_tokens": 32, "temperature": 0}]})

    messages: SkipValidation[list[ChatMessage]] = Field(..., description="The conversation so far, at least one message; it is rendered with the chat template the model was trained with.")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate; at most the server's `max_new_tokens`. Default: `max_new_tokens`, or what still fits the model's context.")
    max_completion_tokens: int | None = Field(None, ge=1, description="The newer name of `max_tokens`; wins when both are given.")
    tools: Ignored = Field(None, description="Refused: this server does no tool calling.")
    functions: Ignored = Field(None, description="Refused: this server does no function calling.")
    tool_choice: Ignored = Field(None, description="Only `none` and `auto` (without `tools`) are accepted.")
    function_call: Ignored = Field(None, description="Only `none` and `auto` (without `functions`) are accepted.")
    logprobs: bool | None = Field(None, description="Refused when true: log probabilities are not returned.")
    top_logprobs: int | None = Field(None, description="Refused when above 0: log probabilities are not returned.")
    audio: Ignored = Field(None, description="Refused: text only.")
    response_format: Ignored = Field(None, description=IGNORED + " The answer is plain text; no JSON mode is enforced.")
    parallel_tool_calls: Ignored = Field(None, description=IGNORED)
    modalities: Ignored = Field(None, description=IGNORED + " The answer is text.")
    metadata: Ignored = Field(None, description=IGNORED)
    store: Ignored = Field(None, description=IGNORED)
    service_tier: Ignored = Field(None, description=IGNORED)
    reasoning_effort: Ignored = Field(None, description=IGNORED)
    verbosity: Ignored = Field(None, description=IGNORED)
    prediction: Ignored = Field(None, description=IGNORED)
    prompt_cache_key: Ignored = Field(None, description=IGNORED)
    safety_identifier: Ignored = Field(None, description=IGNORED)
    web_search_options: Ignored = Field(None, description=IGNORED)


class CompletionRequest(_Sampling):
    """Raw text for the model to continue, without a chat template."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{"model": "greeter", "prompt": "Once upon a time", "max_tokens": 16}]})

    prompt: SkipValidation[str | list[str]] = Field(..., description="A text, or a list of texts (one choice each, in order). Token-id prompts are refused.")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate per prompt; at most the server's `max_new_tokens`. Default 16, as in OpenAI's API.")
    echo: bool | None = Field(None, description="Refused when true.")
    best_of: int | None = Field(None, description="Only 1 is supported.")
    logprobs: int | None = Field(None, description="Refused when above 0: log probabilities are not returned.")
    suffix: str | None = Field(None, description="Refused: no insertion mode.")


class Usage(BaseModel):
    """Token counts of the request."""

    prompt_tokens: int = Field(..., description="Tokens in the prompt(s), as the model saw them (after the chat template).")
    completion_tokens: int = Field(..., description="Tokens generated, counting the end-of-turn token when the model stopped by itself.")
    total_tokens: int = Field(..., description="`prompt_tokens + completion_tokens`.")


class AssistantMessage(BaseModel):
    """The generated turn."""

    role: Literal["assistant"] = Field("assistant", description="Always `assistant`.")
    content: str = Field(..., description="The answer's text.")


class ChatChoice(BaseModel):
    """One answer."""

    index: int = Field(..., description="Always 0 (only `n: 1` is supported).")
    message: AssistantMessage
    logprobs: None = Field(None, description="Always null.")
    finish_reason: Literal["stop", "length"] = Field(..., description="`stop`: the model ended its turn or hit a stop string; `length`: it reached `max_tokens`.")


class ChatCompletion(BaseModel):
    """The answer to a chat completion request (a non-streamed one)."""

    id: str = Field(..., description="Unique id of this answer, `chatcmpl-...`.")
    object: Literal["chat.completion"] = Field("chat.completion", description="Always `chat.completion`.")
    created: int = Field(..., description="Unix time of the answer.")
    model: str = Field(..., description="The `model` of the request.")
    choices: list[ChatChoice]
    usage: Usage
    flags: list[dict] = Field(default_factory=list, description="tunekit extension: guardrail flags raised by the request or the answer (kind, where, detail, action).")


class CompletionChoice(BaseModel):
    """The continuation of one prompt."""

    index: int = Field(..., description="Position of the prompt in the request.")
    text: str = Field(..., description="The generated text (without the prompt).")
    logprobs: None = Field(None, description="Always null.")
    finish_reason: Literal["stop", "length"] = Field(..., description="`stop`: the model produced its end token or hit a stop string; `length`: it reached `max_tokens`.")


class Completion(BaseModel):
    """The answer to a completion request (a non-streamed one)."""

    id: str = Field(..., description="Unique id of this answer, `cmpl-...`.")
    object: Literal["text_completion"] = Field("text_completion", description="Always `text_completion`.")
    created: int = Field(..., description="Unix time of the answer.")
    model: str = Field(..., description="The `model` of the request.")
    choices: list[CompletionChoice]
    usage: Usage
    flags: list[dict] = Field(default_factory=list, description="tunekit extension: guardrail flags raised by the request or the answers (kind, where, detail, action).")


class ModelCard(BaseModel):
    """One model the `model` field of a request may name."""

    id: str = Field(..., description="What to put in a request's `model` field.")
    object: Literal["model"] = Field("model", description="Always `model`.")
    created: int = Field(..., description="Unix time the server loaded it.")
    owned_by: str = Field("tunekit", description="`tunekit` for a served or base model; in service mode a fine-tuned model's project.")


class ModelList(BaseModel):
    """The models this server answers for: for a PEFT model, the base model id and each adapter name."""

    object: Literal["list"] = Field("list", description="Always `list`.")
    data: list[ModelCard]
