//! Continuing a stream that broke after the caller had part of the answer
//! (`on_stream_break = "continue"`): prefill where the next target takes
//! one, else regenerate and suppress the delivered prefix, else the in-band
//! error.

use crate::support::mock::Wire;
use crate::support::*;
use serde_json::{Value, json};

const CONTINUE: &str = "on_stream_break = \"continue\"";

#[tokio::test]
async fn a_cut_stream_is_regenerated_elsewhere_and_the_delivered_prefix_suppressed() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::StreamCut(vec!["The answer", " is"]));
    b.set_default(Script::Answer("The answer is 42."));
    let gw = Gateway::start(&two_providers(&a, &b, CONTINUE), KEYS);
    let reply = post(&gw.chat_url(), &streamed_chat("chat")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.streamed_text(), "The answer is 42.", "{}", reply.text());
    assert_eq!(reply.sse_data().last().unwrap(), "[DONE]", "a complete answer");
    let chunks = reply.valid_chunks();
    let roles = chunks
        .iter()
        .filter(|c| !c["choices"][0]["delta"]["role"].is_null())
        .count();
    assert_eq!(roles, 1, "one answer, one role");
    assert_eq!(
        chunks.iter().rev().nth(1).unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(
        chunks.last().unwrap()["usage"]["completion_tokens"],
        7,
        "usage of the answering attempt"
    );
    let continuation = &b.seen()[0].body;
    assert_eq!(
        continuation["messages"],
        chat("chat")["messages"],
        "no prefill for a target without it"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"switchboard_stream_breaks_total{route="chat",outcome="continued"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_regenerated_answer_that_differs_ends_with_the_in_band_error() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::StreamCut(vec!["The answer", " is"]));
    b.set_default(Script::Answer("Something else entirely."));
    let gw = Gateway::start(&two_providers(&a, &b, CONTINUE), KEYS);
    let reply = post(&gw.chat_url(), &streamed_chat("chat")).await;
    assert_eq!(
        reply.streamed_text(),
        "The answer is",
        "nothing of the other answer leaks"
    );
    let data = reply.sse_data();
    assert!(!data.contains(&"[DONE]".to_string()), "never complete");
    let error: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("incomplete") && message.contains("could not be continued"),
        "{message}"
    );
    assert_eq!(b.hits(), 1);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"provider="b",model="model-b",outcome="diverged"} 1"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"tokens_total{provider="b""#),
        "a dropped continuation is not billed"
    );
}

#[tokio::test]
async fn a_stalled_stream_continues_on_a_prefill_target_with_the_delivered_text() {
    let (a, claude) = (
        MockProvider::start("a").await,
        MockProvider::start("claude").await,
    );
    a.set_default(Script::StreamStall(vec!["Paris is", " the "]));
    claude.set_default(Script::Wire(Wire::Anthropic, " capital of France."));
    let config = format!(
        r#"
[providers.a]
adapter = "openai"
base_url = "{a}"
api_key_env = "KEY_A"
idle_timeout_ms = 500

[providers.a.models.model-a]

[providers.claude]
adapter = "anthropic"
base_url = "http://{claude}"
api_key_env = "KEY_B"

[providers.claude.models.claude-sonnet-4-5]
capabilities = ["tools", "images", "json_schema", "streaming", "prefill"]

[routes.chat]
targets = ["a/model-a", "claude/claude-sonnet-4-5"]
{CONTINUE}
"#,
        a = a.url(),
        claude = claude.addr,
    );
    let gw = Gateway::start(&config, KEYS);
    let reply = post(&gw.chat_url(), &streamed_chat("chat")).await;
    assert_eq!(
        reply.streamed_text(),
        "Paris is the capital of France.",
        "{}",
        reply.text()
    );
    assert_eq!(reply.sse_data().last().unwrap(), "[DONE]");
    let ids: Vec<Value> = reply.chunks().iter().map(|c| c["id"].clone()).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "the continuation keeps the stream's id: {ids:?}"
    );
    let sent = &claude.seen()[0].body;
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(
        messages.last().unwrap(),
        &json!({"role": "assistant", "content": [{"type": "text", "text": "Paris is the"}]}),
        "the delivered text, trailing whitespace trimmed, as a prefill"
    );
}

#[tokio::test]
async fn a_stream_that_already_streamed_tool_calls_is_not_continued() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let call = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "model-a",
        "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1",
        "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":"}}]}, "finish_reason": null}]});
    a.set_default(Script::RawStream(format!("data: {call}\n\n")));
    let gw = Gateway::start(&two_providers(&a, &b, CONTINUE), KEYS);
    let reply = post(&gw.chat_url(), &streamed_chat("chat")).await;
    let error: Value = serde_json::from_str(reply.sse_data().last().unwrap()).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("tool calls were already streamed"), "{message}");
    assert_eq!(b.hits(), 0, "half a tool call cannot be continued");
}

#[tokio::test]
async fn a_stream_stopped_by_a_content_filter_is_not_continued_elsewhere() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let text = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "model-a",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Well"}, "finish_reason": null}]});
    let filtered = json!({"error": {"message": "output flagged by the content filter",
        "type": "invalid_request_error", "code": "content_filter"}});
    a.set_default(Script::RawStream(format!("data: {text}\n\ndata: {filtered}\n\n")));
    let gw = Gateway::start(&two_providers(&a, &b, CONTINUE), KEYS);
    let reply = post(&gw.chat_url(), &streamed_chat("chat")).await;
    assert_eq!(reply.streamed_text(), "Well");
    let error: Value = serde_json::from_str(reply.sse_data().last().unwrap()).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("output flagged"), "{message}");
    assert_eq!(
        b.hits(),
        0,
        "another provider does not get to finish what a filter stopped"
    );
}

#[tokio::test]
async fn a_target_that_went_silent_mid_stream_is_not_asked_again() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::StreamStall(vec!["The answer", " is"]));
    b.set_default(Script::Answer("The answer is 42."));
    // The plan repeats `a` before `b`: a silence must skip the repeat.
    let route = format!("{CONTINUE}\npolicy_config = {{ retries_per_target = 1 }}");
    let gw = Gateway::start(&two_providers(&a, &b, &route), KEYS);
    let reply = post(&gw.chat_url(), &streamed_chat("chat")).await;
    assert_eq!(reply.streamed_text(), "The answer is 42.", "{}", reply.text());
    assert_eq!(a.hits(), 1, "one idle timeout, not two");
    assert_eq!(b.hits(), 1);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"switchboard_attempts_total{provider="a",model="model-a",outcome="timeout"} 1"#),
        "{metrics}"
    );
}
