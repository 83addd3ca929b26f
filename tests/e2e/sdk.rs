//! The official `openai` Python SDK against the gateway, unchanged, and the
//! same client-side behaviour whichever provider answers.

use crate::support::mock::Wire;
use crate::support::*;
use serde_json::{Value, json};

/// The five answers `tests/sdk/openai_sdk.py` expects, in `wire`'s format.
fn sdk_script(wire: Wire) -> Vec<Script> {
    vec![
        Script::Wire(wire, "Hello from the mock"),
        Script::Wire(wire, "Hello from the mock"),
        Script::WireTool(wire, "get_weather", r#"{"city":"Paris"}"#),
        Script::Wire(wire, "It is sunny"),
        Script::WireCut(wire, vec!["Hello", " from"]),
    ]
}

async fn run_sdk(url: &str, route: &str) -> Value {
    run_script("openai_sdk.py", url, route).await
}

/// Run `tests/sdk/<script> URL KEY ROUTE`; its `SUMMARY` line.
async fn run_script(script: &str, url: &str, route: &str) -> Value {
    run_script_with(script, url, &[route]).await
}

/// Run `tests/sdk/<script> URL KEY ARGS...`; its `SUMMARY` line.
async fn run_script_with(script: &str, url: &str, args: &[&str]) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/sdk")
        .join(script);
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        // tests/run points this at its venv; plain `cargo test` uses python3.
        let python = std::env::var("SWITCHBOARD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        std::process::Command::new(python)
            .arg(script)
            .arg(url)
            .arg("sk-sdk")
            .args(args)
            .output()
    })
    .await
    .unwrap()
    .expect("python runs (tests/run makes a venv with the openai and anthropic packages)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "SDK checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SUMMARY "))
        .expect("summary line");
    serde_json::from_str(summary).unwrap()
}

#[tokio::test]
async fn the_official_python_sdk_sees_the_same_behaviour_from_every_provider() {
    let (openai, anthropic, gemini) = (
        MockProvider::start("openai").await,
        MockProvider::start("anthropic").await,
        MockProvider::start("gemini").await,
    );
    openai.script(sdk_script(Wire::OpenAi));
    anthropic.script(sdk_script(Wire::Anthropic));
    gemini.script(sdk_script(Wire::Gemini));
    let config = format!(
        r#"
[[gateway_keys]]
name = "sdk"
key_env = "GW_KEY"

[providers.oai]
adapter = "openai"
base_url = "{}"
api_key_env = "OPENAI_KEY"
[providers.oai.models.gpt-4o]

[providers.ant]
adapter = "anthropic"
base_url = "http://{}"
api_key_env = "ANTHROPIC_KEY"
[providers.ant.models.claude-sonnet-4-5]

[providers.goo]
adapter = "gemini"
base_url = "http://{}"
api_key_env = "GEMINI_KEY"
[providers.goo.models."gemini-2.5-flash"]

[routes.via-openai]
targets = ["oai/gpt-4o"]
[routes.via-anthropic]
targets = ["ant/claude-sonnet-4-5"]
[routes.via-gemini]
targets = ["goo/gemini-2.5-flash"]
"#,
        openai.url(),
        anthropic.addr,
        gemini.addr
    );
    let env = [
        ("GW_KEY", "sk-sdk"),
        ("OPENAI_KEY", "k1"),
        ("ANTHROPIC_KEY", "k2"),
        ("GEMINI_KEY", "k3"),
    ];
    let gw = Gateway::start(&config, &env);

    let mut summaries = Vec::new();
    for (route, provider, model) in [
        ("via-openai", "oai", "gpt-4o"),
        ("via-anthropic", "ant", "claude-sonnet-4-5"),
        ("via-gemini", "goo", "gemini-2.5-flash"),
    ] {
        let mut summary = run_sdk(&gw.url, route).await;
        assert_eq!(
            summary["model"], model,
            "{route}: the body names the model that answered"
        );
        assert_eq!(summary["provider_header"], provider);
        let object = summary.as_object_mut().unwrap();
        object.remove("model");
        object.remove("provider_header");
        summaries.push((route, summary));
    }
    let expected = json!({
        "text": "Hello from the mock", "finish_reason": "stop", "usage": [11, 7, 18], "object": "chat.completion",
        "stream_text": "Hello from the mock", "stream_finish_reason": "stop", "stream_usage": [11, 7],
        "tool_finish_reason": "tool_calls", "tool_call": ["function", "get_weather", {"city": "Paris"}],
        "tool_answer": "It is sunny", "listed": true, "unknown_model": "model_not_found", "wrong_key": 401,
        "broken_stream": "raised", "broken_stream_text": "Hello from",
    });
    for (route, summary) in &summaries {
        assert_eq!(summary, &expected, "{route}");
    }

    // The tool result went back to each provider in its own format.
    assert_eq!(openai.seen()[3].body["messages"][2]["role"], "tool");
    let anthropic_turn = &anthropic.seen()[3].body["messages"][2]["content"][0];
    assert_eq!(
        (
            anthropic_turn["type"].clone(),
            anthropic_turn["tool_use_id"].clone()
        ),
        (json!("tool_result"), json!("toolu_mock"))
    );
    let gemini_turn = &gemini.seen()[3].body["contents"][2]["parts"][0];
    assert_eq!(gemini_turn["functionResponse"]["name"], "get_weather");
}

#[tokio::test]
async fn the_simulator_answers_structured_outputs_tools_and_n_choices_as_a_real_model_would() {
    let config = "[providers.sim]\nadapter = \"openai\"\nsimulated = true\n[providers.sim.models.sim-model]\n[routes.chat]\ntargets = [\"sim/sim-model\"]\n";
    let gw = Gateway::start(config, &[]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sdk/simulator.py");
    let url = format!("{}/v1", gw.url);
    let output = tokio::task::spawn_blocking(move || {
        let python = std::env::var("SWITCHBOARD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        std::process::Command::new(python)
            .arg(script)
            .arg(url)
            .arg("chat")
            .output()
    })
    .await
    .unwrap()
    .expect("python runs (tests/run makes a venv with the openai package)");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // What it sends validates against the official schemas too.
    let mut asked = chat("chat");
    asked["n"] = json!(2);
    post(&gw.chat_url(), &asked).await.completion();
    let mut tool = streamed_chat("chat");
    tool["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}}]);
    tool["tool_choice"] = json!("required");
    let chunks = post(&gw.chat_url(), &tool).await.valid_chunks();
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );
}

/// The answers `tests/sdk/anthropic_sdk.py` expects from a target of `wire`.
fn anthropic_sdk_script(wire: Wire) -> Vec<Script> {
    let thinking = match wire {
        Wire::Anthropic => Script::Status(
            200,
            vec![],
            json!({"id": "msg_t", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                "content": [{"type": "thinking", "thinking": "Greet.", "signature": "EqQBCkgIARAB=="},
                            {"type": "text", "text": "Hello"}],
                "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 11, "output_tokens": 7}})
            .to_string(),
        ),
        _ => Script::Wire(wire, "Hello"),
    };
    let overloaded = match wire {
        Wire::Anthropic => r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        _ => r#"{"error":{"message":"Overloaded","type":"server_error","code":null}}"#,
    };
    let overloaded_status = if matches!(wire, Wire::Anthropic) { 529 } else { 503 };
    vec![
        Script::Wire(wire, "Hello from the mock"),
        Script::Wire(wire, "Hello from the mock"),
        Script::WireTool(wire, "get_weather", r#"{"city":"Paris"}"#),
        Script::Wire(wire, "It is sunny"),
        thinking,
        Script::Wire(wire, "A PNG image"),
        Script::WireCut(wire, vec!["Hello", " from"]),
        Script::Status(overloaded_status, vec![], overloaded.into()),
    ]
}

#[tokio::test]
async fn the_official_anthropic_sdk_works_passed_through_to_anthropic_and_translated_to_chat() {
    let (anthropic, openai) = (
        MockProvider::start("anthropic").await,
        MockProvider::start("openai").await,
    );
    anthropic.script(anthropic_sdk_script(Wire::Anthropic));
    openai.script(anthropic_sdk_script(Wire::OpenAi));
    let config = format!(
        r#"
[[gateway_keys]]
name = "sdk"
key_env = "GW_KEY"

[providers.ant]
adapter = "anthropic"
base_url = "http://{}"
api_key_env = "ANTHROPIC_KEY"
[providers.ant.models.claude-sonnet-4-5]

[providers.oai]
adapter = "openai"
base_url = "{}"
api_key_env = "OPENAI_KEY"
[providers.oai.models.gpt-4o]

[routes.claude-native]
targets = ["ant/claude-sonnet-4-5"]
[routes.claude-via-openai]
targets = ["oai/gpt-4o"]
"#,
        anthropic.addr,
        openai.url()
    );
    let env = [
        ("GW_KEY", "sk-sdk"),
        ("ANTHROPIC_KEY", "k1"),
        ("OPENAI_KEY", "k2"),
    ];
    let gw = Gateway::start(&config, &env);

    let native = run_script("anthropic_sdk.py", &gw.url, "claude-native").await;
    let translated = run_script("anthropic_sdk.py", &gw.url, "claude-via-openai").await;
    let common = |summary: &Value| {
        let mut summary = summary.clone();
        let object = summary.as_object_mut().unwrap();
        for key in ["usage", "provider_header", "thinking_blocks", "count_tokens"] {
            object.remove(key);
        }
        summary
    };
    let expected = json!({
        "text": "Hello from the mock", "stop_reason": "end_turn",
        "stream_text": "Hello from the mock", "stream_stop_reason": "end_turn",
        "stream_first_last": ["message_start", "message_stop"], "stream_output_tokens": 7,
        "tool": ["tool_use", "get_weather", {"city": "Paris"}], "after_tool": "It is sunny",
        "image_text": "A PNG image",
        "broken": ["APIStatusError", "Hello from", "api_error"],
        "errors": [["not_found", 404, "not_found_error"], ["auth", 401, "authentication_error"],
                   ["overloaded", 529, "overloaded_error"]],
    });
    assert_eq!(common(&native), expected, "passed through to Anthropic");
    assert_eq!(common(&translated), expected, "translated to chat");
    assert_eq!(native["provider_header"], "ant");
    assert_eq!(translated["provider_header"], "oai");
    // Anthropic's usage as it came; chat's prompt less its 3 cached tokens.
    assert_eq!(native["usage"], json!([11, 7]));
    assert_eq!(translated["usage"], json!([8, 7]));
    // Thinking survives pass-through; chat has no thinking blocks to give.
    assert_eq!(native["thinking_blocks"], json!(["thinking", "text"]));
    assert_eq!(translated["thinking_blocks"], json!(["text"]));
    assert!(native["count_tokens"].as_u64().unwrap() >= 100);

    // The tool round trip reached each provider in its own format.
    let ant_turn = &anthropic.seen()[3].body["messages"][2]["content"][0];
    assert_eq!(ant_turn["type"], "tool_result");
    let oai_turn = &openai.seen()[3].body["messages"][2];
    assert_eq!(
        (oai_turn["role"].as_str(), oai_turn["content"].as_str()),
        (Some("tool"), Some("Sunny, 21 C"))
    );
    // The image, as a data URL for chat and untouched for Anthropic.
    let url = openai.seen()[5].body["messages"][0]["content"][0]["image_url"]["url"].clone();
    assert!(
        url.as_str().unwrap().starts_with("data:image/png;base64,"),
        "{url}"
    );
    assert_eq!(
        anthropic.seen()[5].body["messages"][0]["content"][0]["source"]["type"],
        "base64"
    );
    assert_eq!(anthropic.seen()[4].body["thinking"]["budget_tokens"], 1024);
}

/// The Responses answers `tests/sdk/openai_apis.py` expects, in `wire`'s format.
fn responses_sdk_script(wire: Wire) -> Vec<Script> {
    vec![
        Script::Wire(wire, "Hello from the mock"),
        Script::Wire(wire, "Hello from the mock"),
        Script::WireTool(wire, "get_weather", r#"{"city":"Paris"}"#),
        Script::Wire(wire, "It is sunny"),
        Script::Wire(wire, r#"{"city":"Paris"}"#),
    ]
}

#[tokio::test]
async fn the_official_openai_sdk_speaks_responses_and_embeddings_to_every_provider_format() {
    let (chat, native, anthropic, gemini) = (
        MockProvider::start("chat").await,
        MockProvider::start("native").await,
        MockProvider::start("anthropic").await,
        MockProvider::start("gemini").await,
    );
    chat.script(responses_sdk_script(Wire::OpenAi));
    native.script(responses_sdk_script(Wire::Responses));
    anthropic.script(responses_sdk_script(Wire::Anthropic));
    gemini.script(responses_sdk_script(Wire::Gemini));
    let (embed_openai, embed_gemini) = (MockProvider::start("eo").await, MockProvider::start("eg").await);
    let openai_list = |data: Value| {
        json!({"object": "list", "data": data, "model": "text-embedding-3-small", "usage": {"prompt_tokens": 2, "total_tokens": 2}})
            .to_string()
    };
    // Each embeddings route serves two of the four runs.
    for _ in 0..2 {
        embed_openai.script([
            Script::Status(
                200,
                vec![],
                openai_list(
                    json!([{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]},
                                   {"object": "embedding", "index": 1, "embedding": [0.25, 2.0]}]),
                ),
            ),
            Script::Status(
                200,
                vec![],
                openai_list(json!([{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]}])),
            ),
        ]);
        embed_gemini.script([
            Script::Status(
                200,
                vec![],
                json!({"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 2.0]}]}).to_string(),
            ),
            Script::Status(
                200,
                vec![],
                json!({"embeddings": [{"values": [0.5, -1.0]}]}).to_string(),
            ),
        ]);
    }
    let config = format!(
        r#"
[[gateway_keys]]
name = "sdk"
key_env = "GW_KEY"

[providers.chat]
adapter = "openai"
base_url = "{}"
api_key_env = "K1"
[providers.chat.models.llama-3]

[providers.native]
adapter = "openai"
base_url = "{}"
api_key_env = "K2"
responses_api = true
[providers.native.models.gpt-5]

[providers.ant]
adapter = "anthropic"
base_url = "http://{}"
api_key_env = "K3"
[providers.ant.models.claude-sonnet-4-5]

[providers.goo]
adapter = "gemini"
base_url = "http://{}"
api_key_env = "K4"
[providers.goo.models."gemini-2.5-flash"]

[providers.eo]
adapter = "openai"
base_url = "{}"
api_key_env = "K1"
[providers.eo.models.text-embedding-3-small]
capabilities = ["embeddings"]

[providers.eg]
adapter = "gemini"
base_url = "http://{}"
api_key_env = "K4"
[providers.eg.models.gemini-embedding-001]
capabilities = ["embeddings"]

[routes.via-chat]
targets = ["chat/llama-3"]
[routes.via-native]
targets = ["native/gpt-5"]
[routes.via-anthropic]
targets = ["ant/claude-sonnet-4-5"]
[routes.via-gemini]
targets = ["goo/gemini-2.5-flash"]
[routes.embed-openai]
targets = ["eo/text-embedding-3-small"]
[routes.embed-gemini]
targets = ["eg/gemini-embedding-001"]
"#,
        chat.url(),
        native.url(),
        anthropic.addr,
        gemini.addr,
        embed_openai.url(),
        embed_gemini.addr
    );
    let env = [
        ("GW_KEY", "sk-sdk"),
        ("K1", "k1"),
        ("K2", "k2"),
        ("K3", "k3"),
        ("K4", "k4"),
    ];
    let gw = Gateway::start(&config, &env);
    let expected = json!({
        "text": "Hello from the mock", "status": "completed",
        "stream_text": "Hello from the mock", "stream_first_last": ["response.created", "response.completed"],
        "stream_deltas": true,
        "call": ["get_weather", {"city": "Paris"}], "after_call": "It is sunny",
        "structured": {"city": "Paris"},
        "previous_response_id": [400, true],
        "embeddings": [[0.5, -1.0], [0.25, 2.0]], "float_embedding": [0.5, -1.0],
    });
    for (route, embed_route, provider) in [
        ("via-chat", "embed-openai", "chat"),
        ("via-native", "embed-gemini", "native"),
        ("via-anthropic", "embed-openai", "ant"),
        ("via-gemini", "embed-gemini", "goo"),
    ] {
        let mut summary = run_script_with("openai_apis.py", &gw.url, &[route, embed_route]).await;
        assert_eq!(summary["provider_header"], provider, "{route}");
        summary.as_object_mut().unwrap().remove("provider_header");
        assert_eq!(summary, expected, "{route}");
    }
    // The structured output reached each chat-speaking provider as chat's
    // `response_format`, and the native one as the caller sent it.
    assert_eq!(chat.seen()[4].body["response_format"]["type"], "json_schema");
    assert_eq!(native.seen()[4].body["text"]["format"]["name"], "place");
    assert_eq!(native.seen()[0].path, "/v1/responses");
    assert!(
        anthropic.seen()[4].body["tools"].is_array(),
        "Anthropic gets JSON through its tool"
    );
}
