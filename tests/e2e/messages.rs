//! `POST /v1/messages`: Anthropic Messages in, passed through to a target
//! that speaks it (byte for byte), translated for one that does not, with
//! the same failover, errors in Anthropic's shape, and the ledger.

use crate::support::mock::Wire;
use crate::support::*;
use serde_json::{Value, json};

/// Providers `ant` (Anthropic, key `KEY_ANT`) and `oai` (OpenAI, key
/// `KEY_OAI`), with routes `native` (ant then oai), `translated` (oai
/// only) and `mixed-oai-first` (oai then ant). Gateway key `GW_KEY`.
fn config(ant: &MockProvider, oai: &MockProvider) -> String {
    format!(
        r#"
[[gateway_keys]]
name = "caller"
key_env = "GW_KEY"

[providers.ant]
adapter = "anthropic"
base_url = "http://{}"
api_key_env = "KEY_ANT"
timeout_ms = 2000
first_token_timeout_ms = 2000
idle_timeout_ms = 1000
options = {{ beta = ["adapter-beta"] }}
[providers.ant.models.claude-sonnet-4-5]
input_price = 3.0
output_price = 15.0

[providers.oai]
adapter = "openai"
base_url = "{}"
api_key_env = "KEY_OAI"
timeout_ms = 2000
first_token_timeout_ms = 2000
idle_timeout_ms = 1000
[providers.oai.models.gpt-4o]
input_price = 2.5
output_price = 10.0

[routes.native]
targets = ["ant/claude-sonnet-4-5", "oai/gpt-4o"]
on_stream_break = "continue"
[routes.translated]
targets = ["oai/gpt-4o"]
[routes.mixed-oai-first]
targets = ["oai/gpt-4o", "ant/claude-sonnet-4-5"]
"#,
        ant.addr,
        oai.url()
    )
}

const ENV: &[(&str, &str)] = &[
    ("GW_KEY", "gw-secret"),
    ("KEY_ANT", "ant-secret"),
    ("KEY_OAI", "oai-secret"),
];

async fn messages(gw: &Gateway, body: &str, extra: &[(&str, &str)]) -> Reply {
    let mut headers = vec![("x-api-key", "gw-secret"), ("anthropic-version", "2023-06-01")];
    headers.extend_from_slice(extra);
    post_with(
        &format!("{}/v1/messages", gw.url),
        body.as_bytes().to_vec(),
        &headers,
    )
    .await
}

/// The events of a Messages stream: (name, data), in order.
fn events(reply: &Reply) -> Vec<(String, Value)> {
    reply
        .text()
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|event| {
            let name = event
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_else(|| panic!("an event without a name: {event}"));
            let data = event.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (name.to_string(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

/// What a Claude client sends: system blocks with cache control, a
/// thinking block with its signature in the history, a tool round trip.
const CLAUDE_REQUEST: &str = r#"{"model": "native", "max_tokens": 1024,
  "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
  "thinking": {"type": "enabled", "budget_tokens": 1024},
  "tools": [{"name": "weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
  "messages": [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": [
      {"type": "thinking", "thinking": "Use the tool.", "signature": "EqQBCkgIARABGAIiQL\u00e9=="},
      {"type": "tool_use", "id": "toolu_01", "name": "weather", "input": {"city": "Paris"}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "Sunny, 21.5"}]}
  ],
  "temperature": 1.0}"#;

#[tokio::test]
async fn a_claude_request_passes_through_to_anthropic_byte_for_byte_with_only_the_model_changed() {
    let (ant, oai) = (MockProvider::start("ant").await, MockProvider::start("oai").await);
    let answer = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"thinking","thinking":"Sunny.","signature":"sig=="},{"type":"text","text":"Sunny, 21.5 °C.","citations":null}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":40,"cache_read_input_tokens":100,"cache_creation_input_tokens":0,"output_tokens":12}}"#;
    ant.script([Script::Status(200, vec![], answer.into())]);
    let gw = Gateway::start(&config(&ant, &oai), ENV);

    let reply = messages(
        &gw,
        CLAUDE_REQUEST,
        &[("anthropic-beta", "caller-beta,adapter-beta")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.text(),
        answer,
        "the answer comes back as the provider sent it"
    );
    assert_eq!(reply.header("x-switchboard-provider"), "ant");
    // (40 + 100 cached) at $3/M less the cache discount is not configured: all input at $3/M.
    assert!(reply.header("x-switchboard-cost-usd").parse::<f64>().unwrap() > 0.0);

    let seen = &ant.seen()[0];
    assert_eq!(seen.path, "/v1/messages");
    let expected = CLAUDE_REQUEST.replace(r#""model": "native""#, r#""model": "claude-sonnet-4-5""#);
    assert_eq!(
        String::from_utf8_lossy(&seen.raw),
        expected,
        "every byte but the model's as the caller sent them"
    );
    assert_eq!(
        seen.headers["x-api-key"], "ant-secret",
        "the provider's key, never the caller's"
    );
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert_eq!(seen.headers["anthropic-beta"], "adapter-beta,caller-beta");
    assert_eq!(oai.hits(), 0);
}

#[tokio::test]
async fn a_claude_stream_passes_through_event_by_event() {
    let (ant, oai) = (MockProvider::start("ant").await, MockProvider::start("oai").await);
    let raw = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Hm.\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQB==\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_02\",\"name\":\"weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":30}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    ant.script([Script::RawStream(raw.into())]);
    let config = format!("[ledger]\npath = \"ledger.db\"\n{}", config(&ant, &oai));
    let gw = Gateway::start(&config, ENV);
    let body = CLAUDE_REQUEST.replace(r#""max_tokens": 1024"#, r#""max_tokens": 1024, "stream": true"#);
    let reply = messages(&gw, &body, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), "text/event-stream");
    assert_eq!(reply.text(), raw, "every event as the provider sent it");
    assert_eq!(ant.seen()[0].headers["accept"], "text/event-stream");

    let db = crate::ledger::records(&gw, 1).await;
    let record = crate::ledger::row(&db, reply.header("x-switchboard-request-id"));
    assert_eq!(record["route"], "native");
    assert_eq!(record["endpoint"], "/v1/messages");
    assert_eq!(record["outcome"], "answered");
    assert_eq!(record["provider"], "ant");
    assert_eq!(record["stream"], true);
    assert_eq!(
        (
            record["prompt_tokens"].as_u64(),
            record["completion_tokens"].as_u64()
        ),
        (Some(25), Some(30))
    );
}

#[tokio::test]
async fn a_target_that_speaks_chat_gets_the_translation_and_its_answer_comes_back_as_a_message() {
    let (ant, oai) = (MockProvider::start("ant").await, MockProvider::start("oai").await);
    oai.script([Script::WireTool(Wire::OpenAi, "weather", r#"{"city":"Paris"}"#)]);
    let gw = Gateway::start(&config(&ant, &oai), ENV);
    let body = CLAUDE_REQUEST.replace(r#""model": "native""#, r#""model": "translated""#);
    let reply = messages(&gw, &body, &[("anthropic-beta", "caller-beta")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let message = reply.json();
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(
        message["content"],
        json!([{"type": "tool_use", "id": "call_mock", "name": "weather", "input": {"city": "Paris"}}])
    );
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 11, "output_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    );
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));

    let sent = &oai.seen()[0];
    assert!(
        sent.headers.get("anthropic-beta").is_none(),
        "Anthropic's headers stay with Anthropic"
    );
    assert_eq!(sent.body["max_tokens"], 1024);
    assert_eq!(sent.body["reasoning_effort"], "low");
    assert_eq!(
        sent.body["messages"],
        json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "toolu_01", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_01", "content": "Sunny, 21.5"}
        ])
    );
}

#[tokio::test]
async fn a_translated_stream_is_the_real_messages_event_sequence() {
    let (ant, oai) = (MockProvider::start("ant").await, MockProvider::start("oai").await);
    oai.script([Script::Answer("Hello from the mock")]);
    let gw = Gateway::start(&config(&ant, &oai), ENV);
    let body = r#"{"model": "translated", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}"#;
    let reply = messages(&gw, body, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let events = events(&reply);
    let names = names(&events);
    assert_eq!(names[..3], ["message_start", "ping", "content_block_start"]);
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let text: String = events
        .iter()
        .filter_map(|(_, e)| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Hello from the mock");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 7);
    assert_eq!(oai.seen()[0].body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn an_overloaded_anthropic_fails_over_to_chat_and_a_broken_stream_ends_in_an_error_event() {
    let (ant, oai) = (MockProvider::start("ant").await, MockProvider::start("oai").await);
    let overloaded = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    ant.script([
        Script::Status(529, vec![], overloaded.into()),
        Script::WireCut(Wire::Anthropic, vec!["Hello", " from"]),
    ]);
    oai.script([Script::Answer("Hello from chat")]);
    let gw = Gateway::start(&config(&ant, &oai), ENV);

    let body = r#"{"model": "native", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}"#;
    let reply = messages(&gw, body, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-switchboard-provider"), "oai");
    assert_eq!(reply.header("x-switchboard-attempts"), "2");
    assert_eq!(reply.json()["content"][0]["text"], "Hello from chat");

    let streamed = body.replace(r#""max_tokens": 64"#, r#""max_tokens": 64, "stream": true"#);
    let reply = messages(&gw, &streamed, &[]).await;
    assert_eq!(reply.status, 200);
    let events = events(&reply);
    let names = names(&events);
    assert_eq!(names.last(), Some(&"error"), "{names:?}");
    assert!(!names.contains(&"message_stop"));
    assert_eq!(events.last().unwrap().1["type"], "error");
    assert_eq!(events.last().unwrap().1["error"]["type"], "api_error");
    let why = events.last().unwrap().1["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        why.contains("not continued"),
        "the route continues chat streams, and says why not this one: {why}"
    );
    assert_eq!(oai.hits(), 1, "only the whole answer reached chat");
}

#[tokio::test]
async fn errors_come_in_anthropics_shape_with_its_statuses() {
    let (ant, oai) = (MockProvider::start("ant").await, MockProvider::start("oai").await);
    let overloaded = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    ant.set_default(Script::Status(529, vec![], overloaded.into()));
    oai.set_default(Script::Status(
        503,
        vec![],
        r#"{"error":{"message":"Overloaded","type":"server_error","code":"overloaded"}}"#.into(),
    ));
    let gw = Gateway::start(&config(&ant, &oai), ENV);
    let hi = r#"{"model": "native", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}"#;
    for (body, headers, status, kind) in [
        (hi, vec![("x-api-key", "wrong")], 401, "authentication_error"),
        ("{not json", vec![], 400, "invalid_request_error"),
        (
            r#"{"model": "native", "messages": []}"#,
            vec![],
            400,
            "invalid_request_error",
        ),
        (
            r#"{"model": "nope", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}"#,
            vec![],
            404,
            "not_found_error",
        ),
        (hi, vec![], 529, "overloaded_error"),
    ] {
        let mut all = vec![("anthropic-version", "2023-06-01")];
        if !headers.iter().any(|(n, _)| *n == "x-api-key") {
            all.push(("x-api-key", "gw-secret"));
        }
        all.extend(headers);
        let reply = post_with(&format!("{}/v1/messages", gw.url), body.as_bytes().to_vec(), &all).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text());
        let error = reply.json();
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["error"]["type"], kind, "{error}");
        assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[tokio::test]
async fn what_cannot_cross_goes_only_to_anthropic_or_is_refused_saying_what() {
    let (ant, oai) = (MockProvider::start("ant").await, MockProvider::start("oai").await);
    ant.set_default(Script::Wire(Wire::Anthropic, "Searched."));
    let gw = Gateway::start(&config(&ant, &oai), ENV);
    let search = |route: &str, forced: bool| {
        let choice = if forced {
            r#", "tool_choice": {"type": "tool", "name": "web_search"}"#
        } else {
            ""
        };
        format!(
            r#"{{"model": "{route}", "max_tokens": 64, "tools": [{{"type": "web_search_20250305", "name": "web_search"}}]{choice}, "messages": [{{"role": "user", "content": "News?"}}]}}"#
        )
    };
    // Required, with chat first in the plan: chat is skipped, Anthropic answers.
    let reply = messages(&gw, &search("mixed-oai-first", true), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-switchboard-provider"), "ant");
    assert_eq!(reply.header("x-switchboard-attempts"), "1");
    assert_eq!(
        reply.header("x-switchboard-dropped-tools"),
        "",
        "passed through whole"
    );
    // Required, and only chat: refused, and the reason names the tool.
    let reply = messages(&gw, &search("translated", true), &[]).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    let error = reply.json();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("web_search_20250305"),
        "{error}"
    );
    assert_eq!(oai.hits(), 0);
    // Offered, not required: chat answers without it, and says so.
    let reply = messages(&gw, &search("translated", false), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-switchboard-dropped-tools"), "web_search");
    let sent = &oai.seen()[0].body;
    assert!(
        sent.get("tools").is_none() && sent.get("tool_choice").is_none(),
        "{sent}"
    );
}

#[tokio::test]
async fn count_tokens_estimates_for_a_route_the_key_may_use() {
    let (ant, oai) = (MockProvider::start("ant").await, MockProvider::start("oai").await);
    let gw = Gateway::start(&config(&ant, &oai), ENV);
    let url = format!("{}/v1/messages/count_tokens", gw.url);
    let body = json!({"model": "native", "system": "Be brief.", "messages": [{"role": "user", "content": "x".repeat(400)}]});
    let headers = [("x-api-key", "gw-secret"), ("anthropic-version", "2023-06-01")];
    let reply = post_with(&url, body.to_string().into_bytes(), &headers).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let tokens = reply.json()["input_tokens"].as_u64().unwrap();
    assert!(
        (100..=115).contains(&tokens),
        "about 400 characters / 4 and framing: {tokens}"
    );
    let unknown = json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]});
    let reply = post_with(&url, unknown.to_string().into_bytes(), &headers).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["type"], "not_found_error");
    assert_eq!(ant.hits() + oai.hits(), 0, "counting calls no provider");
}

#[tokio::test]
async fn a_keys_limits_hold_across_every_api_it_calls() {
    let (ant, oai) = (MockProvider::start("ant").await, MockProvider::start("oai").await);
    let config = config(&ant, &oai).replace("key_env = \"GW_KEY\"", "key_env = \"GW_KEY\"\nrpm = 2");
    let gw = Gateway::start(&config, ENV);
    let auth = [("authorization", "Bearer gw-secret")];
    let reply = post_with(&gw.chat_url(), chat("translated").to_string().into_bytes(), &auth).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = post_with(
        &format!("{}/v1/responses", gw.url),
        json!({"model": "translated", "input": "Hi"})
            .to_string()
            .into_bytes(),
        &auth,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), "0");
    // The third, by a third API, is over the key's two a minute.
    let body = r#"{"model": "native", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}"#;
    let reply = messages(&gw, body, &[]).await;
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert_eq!(reply.json()["error"]["type"], "rate_limit_error");
    assert!(!reply.header("retry-after").is_empty());
    assert_eq!(ant.hits(), 0);
}

#[tokio::test]
async fn a_target_that_cannot_take_the_request_does_not_hide_why_the_others_failed() {
    let (ant, oai) = (MockProvider::start("ant").await, MockProvider::start("oai").await);
    let overloaded = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    ant.set_default(Script::Status(529, vec![], overloaded.into()));
    let gw = Gateway::start(&config(&ant, &oai), ENV);
    // Anthropic (first) is overloaded; chat (second) cannot take a required server tool.
    let body = r#"{"model": "native", "max_tokens": 64, "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "tool", "name": "web_search"}, "messages": [{"role": "user", "content": "News?"}]}"#;
    let reply = messages(&gw, body, &[]).await;
    assert_eq!(reply.status, 529, "{}", reply.text());
    assert_eq!(reply.json()["error"]["type"], "overloaded_error");
    assert_eq!(oai.hits(), 0);
    // The same key named twice at the top level is refused before routing.
    let twice = r#"{"model": "native", "max_tokens": 8, "model": "translated", "messages": [{"role": "user", "content": "x"}]}"#;
    let reply = messages(&gw, twice, &[]).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("`model` twice"), "{}", reply.text());
}
