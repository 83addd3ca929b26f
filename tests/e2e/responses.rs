//! `POST /v1/responses`: the Responses API, passed through to a provider
//! that serves it and translated for the others, every answer and event
//! checked against the official schema.

use crate::support::mock::Wire;
use crate::support::*;
use serde_json::{Value, json};

/// Providers `native` (serves the Responses API) and `chat` (OpenAI chat
/// only), routes `native` (native then chat), `translated` (chat only).
fn config(native: &MockProvider, chat: &MockProvider) -> String {
    format!(
        r#"
[providers.native]
adapter = "openai"
base_url = "{}"
api_key_env = "KEY_A"
responses_api = true
timeout_ms = 2000
first_token_timeout_ms = 2000
idle_timeout_ms = 1000
[providers.native.models.gpt-5]

[providers.chat]
adapter = "openai"
base_url = "{}"
api_key_env = "KEY_B"
timeout_ms = 2000
first_token_timeout_ms = 2000
idle_timeout_ms = 1000
[providers.chat.models.llama-3]

[routes.native]
targets = ["native/gpt-5", "chat/llama-3"]
[routes.translated]
targets = ["chat/llama-3"]
"#,
        native.url(),
        chat.url()
    )
}

async fn respond(gw: &Gateway, body: &Value) -> Reply {
    post(&format!("{}/v1/responses", gw.url), body).await
}

/// The events of a Responses stream, each checked against the schema.
fn stream_events(reply: &Reply) -> Vec<(String, Value)> {
    reply
        .text()
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|event| {
            let name = event.lines().find_map(|l| l.strip_prefix("event: ")).unwrap();
            let data: Value =
                serde_json::from_str(event.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
            schema::response_event(&data);
            assert_eq!(data["type"], name);
            (name.to_string(), data)
        })
        .collect()
}

#[tokio::test]
async fn a_chat_provider_gets_the_translation_and_its_answer_is_a_valid_response() {
    let (native, chat) = (
        MockProvider::start("native").await,
        MockProvider::start("chat").await,
    );
    chat.script([Script::Answer("{\"city\":\"Paris\"}")]);
    let gw = Gateway::start(&config(&native, &chat), KEYS);
    let request = json!({
        "model": "translated", "instructions": "Answer in JSON.", "max_output_tokens": 100,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Where?"}]}],
        "text": {"format": {"type": "json_schema", "name": "place", "strict": true,
                 "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}}},
        "store": false
    });
    let reply = respond(&gw, &request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let response = reply.json();
    schema::response(&response);
    assert_eq!(response["status"], "completed");
    assert_eq!(
        response["output"][0]["content"][0]["text"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(response["instructions"], "Answer in JSON.");
    assert_eq!(response["usage"]["input_tokens"], 11);
    assert_eq!(response["usage"]["input_tokens_details"]["cached_tokens"], 3);
    assert!(response["id"].as_str().unwrap().starts_with("resp_"));
    let sent = &chat.seen()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.body["max_tokens"], 100);
    assert_eq!(
        sent.body["messages"][0],
        json!({"role": "system", "content": "Answer in JSON."})
    );
    assert_eq!(
        sent.body["messages"][1],
        json!({"role": "user", "content": "Where?"})
    );
    assert_eq!(sent.body["response_format"]["json_schema"]["name"], "place");
    assert_eq!(native.hits(), 0);
}

#[tokio::test]
async fn a_translated_stream_is_the_semantic_event_sequence_and_a_break_fails_it() {
    let (native, chat) = (
        MockProvider::start("native").await,
        MockProvider::start("chat").await,
    );
    chat.script([
        Script::Answer("Hello from the mock"),
        Script::StreamCut(vec!["Hello", " from"]),
    ]);
    let gw = Gateway::start(&config(&native, &chat), KEYS);
    let request = json!({"model": "translated", "input": "Say hello", "stream": true});
    let reply = respond(&gw, &request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let events = stream_events(&reply);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(
        names[names.len() - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, e)| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello from the mock");
    let completed = &events.last().unwrap().1["response"];
    schema::response(completed);
    assert_eq!(completed["usage"]["output_tokens"], 7);

    let reply = respond(&gw, &request).await;
    let events = stream_events(&reply);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.last(), Some(&"response.failed"), "{names:?}");
    assert!(!names.contains(&"response.completed"));
    assert_eq!(events.last().unwrap().1["response"]["status"], "failed");
}

#[tokio::test]
async fn a_provider_that_serves_responses_gets_the_callers_bytes_and_answers_as_it_came() {
    let (native, chat) = (
        MockProvider::start("native").await,
        MockProvider::start("chat").await,
    );
    native.script([
        Script::Wire(Wire::Responses, "Hello from the mock"),
        Script::Wire(Wire::Responses, "Hello from the mock"),
    ]);
    let gw = Gateway::start(&config(&native, &chat), KEYS);
    let raw = r#"{"model": "native", "input": [{"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA=="}, {"role": "user", "content": "Hi"}], "include": ["reasoning.encrypted_content"], "tools": [{"type": "web_search"}], "store": false}"#;
    let reply = post_with(&format!("{}/v1/responses", gw.url), raw.as_bytes().to_vec(), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let response = reply.json();
    schema::response(&response);
    assert_eq!(response["id"], "resp_mock", "the provider's own answer");
    let seen = &native.seen()[0];
    assert_eq!(seen.path, "/v1/responses");
    assert_eq!(
        String::from_utf8_lossy(&seen.raw),
        raw.replace(r#""model": "native""#, r#""model": "gpt-5""#)
    );
    assert_eq!(seen.headers["authorization"], "Bearer secret-key-a");

    let streamed = json!({"model": "native", "input": "Hi", "stream": true});
    let reply = respond(&gw, &streamed).await;
    let events = stream_events(&reply);
    assert_eq!(events.first().unwrap().0, "response.created");
    assert_eq!(events.last().unwrap().0, "response.completed");
    // A body that says nothing of `store` is sent saying no: the provider
    // would otherwise keep it.
    assert_eq!(native.seen()[1].body["store"], false);
    assert_eq!(native.seen()[1].body["input"], "Hi");
    assert_eq!(chat.hits(), 0);
}

#[tokio::test]
async fn a_failing_native_provider_fails_over_to_translation_and_state_is_refused() {
    let (native, chat) = (
        MockProvider::start("native").await,
        MockProvider::start("chat").await,
    );
    native.set_default(Script::Status(
        500,
        vec![],
        r#"{"error":{"message":"boom","type":"server_error"}}"#.into(),
    ));
    chat.set_default(Script::WireTool(
        Wire::OpenAi,
        "get_weather",
        r#"{"city":"Paris"}"#,
    ));
    let gw = Gateway::start(&config(&native, &chat), KEYS);
    let request = json!({
        "model": "native", "input": [
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": "call_0", "name": "get_weather", "arguments": "{\"city\":\"Rome\"}"},
            {"type": "function_call_output", "call_id": "call_0", "output": "Rain"}
        ],
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    });
    let reply = respond(&gw, &request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-switchboard-provider"), "chat");
    let response = reply.json();
    schema::response(&response);
    assert_eq!(response["output"][0]["type"], "function_call");
    assert_eq!(response["output"][0]["call_id"], "call_mock");
    assert_eq!(response["output"][0]["arguments"], "{\"city\":\"Paris\"}");
    let sent = chat.seen()[0].body["messages"].clone();
    assert_eq!(sent[1]["tool_calls"][0]["id"], "call_0");
    assert_eq!(
        sent[2],
        json!({"role": "tool", "tool_call_id": "call_0", "content": "Rain"})
    );

    for (body, param) in [
        (
            json!({"model": "native", "input": "Hi", "previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (json!({"model": "native", "input": "Hi", "store": true}), "store"),
    ] {
        let reply = respond(&gw, &body).await;
        assert_eq!(reply.status, 400, "{}", reply.text());
        assert_eq!(reply.json()["error"]["param"], param);
        assert!(reply.text().contains("stateless"), "{}", reply.text());
    }
    // A hosted tool required cannot be answered by chat; offered, it is left out.
    let forced = json!({"model": "translated", "input": "News?", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}});
    let reply = respond(&gw, &forced).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("web_search"), "{}", reply.text());
    let offered = json!({"model": "translated", "input": "News?", "tools": [{"type": "web_search"}]});
    let reply = respond(&gw, &offered).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-switchboard-dropped-tools"), "web_search");
}
