"""Request and response bodies of the server, as they appear in the OpenAPI docs at ``/docs``.

``inputs`` is declared with its full shape for the docs but validated by hand in ``inputs.py``, so
a bad request gets one message that names the item (``inputs[2]: empty text``) instead of one
error per branch of the union.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, StrictInt, StringConstraints


class TextPair(BaseModel):
    """One input of a sentence-pair model, as an object."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(..., description="The first text.")
    text_pair: str = Field(..., description="The second text.")


Inputs = str | list[str | tuple[str, str] | TextPair]


class ClassifyRequest(BaseModel):
    """Texts to classify."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"inputs": ["my card was declined at the shop", "I want a refund for this order"]}]})

    inputs: SkipValidation[Inputs] = Field(
        ...,
        description="One text, a list of texts, or for sentence-pair models a list of `[text, text_pair]` pairs or "
        "`{\"text\": ..., \"text_pair\": ...}` objects. At most `max_inputs` items of at most `max_chars` characters each.",
    )
    task: str | None = Field(None, description="Multi-task models only (trained with `data.task_column`): the task whose labels "
                             "the inputs are classified into; required for them, an error for other models.")
    metadata: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], Annotated[str, StringConstraints(max_length=512)]] | None = Field(
        None, max_length=16, description="Up to 16 string pairs about the request (channel, locale, customer tier ...), as OpenAI's `metadata`: "
        "kept in the request log, so `tunekit monitor --slice-by FIELD` reports live accuracy per value.")


class Prediction(BaseModel):
    """The model's answer for one input."""

    label: str = Field(..., description="The most probable label.")
    score: float = Field(..., description="Probability of `label`, between 0 and 1.")
    probabilities: dict[str, float] = Field(..., description="Probability of every label the model knows; they sum to 1.")


class ClassifyResponse(BaseModel):
    """Predictions, one per input, in input order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{
                "model": "intent",
                "version": "3",
                "predictions": [{"label": "card", "score": 0.93, "probabilities": {"card": 0.93, "refund": 0.05, "transfer": 0.02}}],
            }]
        }
    )

    model: str = Field(..., description="Name of the served model.")
    version: str | None = Field(..., description="Registry version of the served model; null when it was loaded from a path.")
    predictions: list[Prediction] = Field(..., description="One prediction per input, in input order.")
    task: str | None = Field(None, description="Multi-task models: the task the labels belong to.")
    id: str | None = Field(None, description="Request id (also the `x-request-id` header); send it with `POST /v1/feedback`.")
    flags: list[dict] = Field(default_factory=list, description="Guardrail flags raised by the inputs (kind, where, detail, action).")


class Health(BaseModel):
    """The process is up."""

    status: str = Field("ok", description="Always `ok`.")


class Ready(BaseModel):
    """The model is loaded and requests will be answered."""

    status: str = Field("ready", description="Always `ready`.")
    model: str = Field(..., description="Name of the served model.")
    version: str | None = Field(..., description="Registry version of the served model; null when it was loaded from a path.")


class PredictResponse(BaseModel):
    """Regression: one predicted value per input, in input order, in the target's own units."""

    model: str = Field(..., description="Name of the served model.")
    version: str | None = Field(..., description="Registry version of the served model; null when it was loaded from a path.")
    values: list[float] = Field(..., description="One predicted value per input, in input order.")
    id: str | None = Field(None, description="Request id (also the `x-request-id` header); send it with `POST /v1/feedback`.")
    flags: list[dict] = Field(default_factory=list, description="Guardrail flags raised by the inputs.")


class FeedbackRequest(BaseModel):
    """Feedback on an earlier answer: a rating, the correct label, or the correct answer."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(..., description="The `id` of the answer (the `x-request-id` response header).")
    rating: StrictInt | None = Field(None, description="-1 (bad) to 5 (excellent), as a JSON integer.")
    label: str | None = Field(None, description="Classification: the correct label, one of the model's labels (a multi-task request: of its "
                              "task); regression: the correct value, as a string.")
    answer: str | None = Field(None, description="Generation: the answer that should have been given. On a chat completion it is also a "
                               "preference over the logged answer (preference pairs for `tunekit retrain --from-feedback`); to record "
                               "a choice between two answers, send it on the request whose answer lost, with the preferred text.")
    index: StrictInt | None = Field(None, ge=0, description="Which input (`inputs`) or prompt (`prompt`) of the request a `label` or "
                                    "`answer` is about, from 0; required when the request had more than one.")
    comment: str | None = Field(None, description="Free text for a reviewer.")


class FeedbackAck(BaseModel):
    """The feedback is stored (committed to `serving.db`)."""

    id: int = Field(..., description="Id of the stored feedback.")
    request_id: str = Field(..., description="The request it is about.")


class AdapterLoad(BaseModel):
    """Load an adapter trained on the served base model."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="Name requests use in `model` to pick this adapter.")
    source: str = Field(..., description="A tunekit model directory or a registry reference (`NAME@ALIAS`, `NAME/VERSION`).")


class AdapterList(BaseModel):
    """The adapters loaded on the served base model."""

    base_model: str = Field(..., description="The base model id.")
    adapters: dict[str, str] = Field(..., description="Adapter name -> the directory it was loaded from.")


class ErrorDetail(BaseModel):
    """What went wrong, in the shape of OpenAI's API errors."""

    message: str = Field(..., description="What is wrong, where, and what to do about it.")
    type: str = Field(..., description="Error class: `invalid_request_error`, `not_found_error`, `service_unavailable` or `server_error`.")
    code: str | None = Field(None, description="Machine-readable reason, e.g. `empty_text`, `too_many_inputs`, `model_loading`.")
    param: str | None = Field(None, description="The part of the request at fault, e.g. `inputs[2]`.")


class ErrorResponse(BaseModel):
    """Body of every error response."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"error": {"message": "inputs[2]: empty text", "type": "invalid_request_error", "code": "empty_text", "param": "inputs[2]"}}]})

    error: ErrorDetail
