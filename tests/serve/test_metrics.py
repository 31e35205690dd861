"""The Prometheus metrics: each name with its labels after recording, one registry per instance."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tunekit.serve.metrics import ServerMetrics


def samples(metrics: ServerMetrics) -> dict[tuple[str, tuple], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_every_metric_is_rendered_with_its_labels():
    m = ServerMetrics()
    m.observe_request("/v1/classify", 200, "intent", 0.012)
    m.observe_request("/v1/classify", 200, "intent", 0.020)
    m.observe_request("/v1/classify", 422, "intent", 0.001)
    m.observe_generation("greeter", prompt_tokens=7, generated_tokens=12, ttft_seconds=0.05)
    m.observe_generation("greeter", prompt_tokens=3, generated_tokens=0)
    m.observe_batch("classify", 5)
    m.set_queue_depth("generate", 3)
    m.watch_queue_depth("classify", lambda: 9)
    m.guardrail_flag("pii", "input", "redact")
    m.set_model("intent", "3", "classification", "bundled:minilm")
    m.set_model("intent", "4", "classification", "bundled:minilm")  # a reload replaces the info
    with m.track_inflight():
        assert samples(m)[("tunekit_inflight_requests", ())] == 1
    m.set_gauge("tunekit_drift_score", 0.25, "Drift of the live inputs.", {"feature": "length"})

    s = samples(m)
    assert s[("tunekit_requests_total", (("model", "intent"), ("route", "/v1/classify"), ("status", "200")))] == 2
    assert s[("tunekit_requests_total", (("model", "intent"), ("route", "/v1/classify"), ("status", "422")))] == 1
    assert s[("tunekit_request_duration_seconds_count", (("model", "intent"), ("route", "/v1/classify")))] == 3
    assert s[("tunekit_request_duration_seconds_bucket", (("le", "0.025"), ("model", "intent"), ("route", "/v1/classify")))] == 3
    assert s[("tunekit_request_duration_seconds_bucket", (("le", "0.01"), ("model", "intent"), ("route", "/v1/classify")))] == 1
    assert s[("tunekit_time_to_first_token_seconds_count", (("model", "greeter"),))] == 1
    assert s[("tunekit_prompt_tokens_total", (("model", "greeter"),))] == 10
    assert s[("tunekit_generated_tokens_total", (("model", "greeter"),))] == 12
    assert s[("tunekit_batch_size_bucket", (("kind", "classify"), ("le", "4.0")))] == 0
    assert s[("tunekit_batch_size_bucket", (("kind", "classify"), ("le", "8.0")))] == 1
    assert s[("tunekit_queue_depth", (("kind", "generate"),))] == 3
    assert s[("tunekit_queue_depth", (("kind", "classify"),))] == 9
    assert s[("tunekit_guardrail_flags_total", (("action", "redact"), ("kind", "pii"), ("where", "input")))] == 1
    info = {k: v for k, v in s.items() if k[0] == "tunekit_model_info"}
    assert info == {("tunekit_model_info", (("base_model", "bundled:minilm"), ("model", "intent"), ("task", "classification"), ("version", "4"))): 1}
    assert s[("tunekit_inflight_requests", ())] == 0
    assert s[("tunekit_drift_score", (("feature", "length"),))] == 0.25


def test_two_instances_do_not_clash():
    a, b = ServerMetrics(), ServerMetrics()
    a.observe_request("/v1/classify", 200, "intent", 0.01)
    a.set_gauge("tunekit_live_accuracy", 0.9, "Accuracy on feedback.")
    b.set_gauge("tunekit_live_accuracy", 0.5, "Accuracy on feedback.")
    assert samples(a)[("tunekit_requests_total", (("model", "intent"), ("route", "/v1/classify"), ("status", "200")))] == 1
    assert not any(name == "tunekit_requests_total" for name, _ in samples(b))
    assert samples(a)[("tunekit_live_accuracy", ())] == 0.9
    assert samples(b)[("tunekit_live_accuracy", ())] == 0.5


def test_set_gauge_checks_names_and_labels():
    m = ServerMetrics()
    m.set_gauge("tunekit_drift", 1, "Drift.", {"feature": "length"})
    m.set_gauge("tunekit_drift", 2, "Drift.", {"feature": "label"})
    with pytest.raises(ValueError, match=r"has labels \['feature'\], got \['column'\]"):
        m.set_gauge("tunekit_drift", 3, "Drift.", {"column": "x"})
    with pytest.raises(ValueError, match="metric name '1bad'"):
        m.set_gauge("1bad", 1, "Bad.")
