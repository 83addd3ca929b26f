//! A provider that echoes the credential it received (in an error body, a
//! header or a stream's error event) never gets it past the host: not to
//! the adapter, the caller, the log, `/metrics` or `/admin/*`.

use crate::support::*;
use serde_json::json;

const KEY: &str = "sk-live/Ab+c=d";
/// Every form the key may be echoed in.
const FORMS: &[&str] = &[
    KEY,
    "sk-live%2FAb%2Bc%3Dd",
    "sk-live%2fAb%2bc%3dd",
    "sk-live\\/Ab+c=d",
];

fn config(mock: &MockProvider, adapter: &str) -> String {
    format!(
        r#"
[providers.p]
{adapter}
base_url = "{url}"
api_key_env = "KEY_P"
timeout_ms = 2000
first_token_timeout_ms = 2000
idle_timeout_ms = 2000
[providers.p.models.m]

[routes.chat]
targets = ["p/m"]
max_attempts = 1

# Every echo is answered: no circuit opens on the way.
[circuit]
failures = 1000
min_attempts = 1000
"#,
        url = mock.url()
    )
}

fn assert_clean(what: &str, text: &str) {
    for form in FORMS {
        assert!(!text.contains(form), "{what} carries the key as {form}: {text}");
    }
}

/// An error echoing `form` as written into the JSON text (every form is
/// valid inside a JSON string; `\/` is how some encoders write `/`).
fn echo_error(status: u16, form: &str) -> Script {
    let body = format!(r#"{{"error": {{"message": "Incorrect API key provided: {form}"}}}}"#);
    Script::Status(
        status,
        vec![("x-echo-key", form.to_string()), ("retry-after-ms", "1".into())],
        body,
    )
}

async fn check_every_echo(adapter: &str) {
    let mock = MockProvider::start("p").await;
    let gw = Gateway::start(&config(&mock, adapter), &[("KEY_P", KEY)]);
    for (status, expected) in [(400, 400), (429, 429), (500, 502), (503, 503)] {
        for form in FORMS {
            mock.script([echo_error(status, form)]);
            let reply = post(&gw.chat_url(), &chat("chat")).await;
            assert_eq!(reply.status, expected, "{}", reply.text());
            assert_clean(&format!("the {status} answer"), &reply.text());
            if status == 400 {
                // The provider's own message is passed on, scrubbed.
                assert!(
                    reply.text().contains("Incorrect API key provided: [redacted]"),
                    "{}",
                    reply.text()
                );
            }
        }
    }
    // A stream whose error event echoes the key, before and after the first chunk.
    let error_event = |form: &str| {
        format!(r#"data: {{"error": {{"message": "key {form} was revoked", "type": "server_error"}}}}"#)
            + "\n\n"
    };
    let first = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                       "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": null}]});
    for form in FORMS {
        mock.script([Script::RawStream(format!(
            "data: {first}\n\n{}",
            error_event(form)
        ))]);
        let reply = post(&gw.chat_url(), &streamed_chat("chat")).await;
        assert_eq!(reply.status, 200);
        assert_clean("the broken stream", &reply.text());
        assert!(reply.text().contains("[redacted]"), "{}", reply.text());
        assert!(!reply.text().contains("[DONE]"));

        mock.script([Script::RawStream(error_event(form))]);
        let reply = post(&gw.chat_url(), &streamed_chat("chat")).await;
        assert_eq!(reply.status, 502, "{}", reply.text());
        assert_clean("the stream that failed first", &reply.text());
    }
    assert!(mock.hits() >= 24, "every echo reached the provider");
    assert_clean("the log", &gw.logs());
    assert_clean("/metrics", &gw.metrics().await);
    for path in ["/admin/targets", "/admin/config", "/admin/plugins"] {
        let reply = get(&format!("{}{path}", gw.url), &[]).await;
        assert_eq!(reply.status, 200);
        assert_clean(path, &reply.text());
    }
}

#[tokio::test]
async fn an_echoed_bearer_key_is_scrubbed_everywhere() {
    check_every_echo(r#"adapter = "openai""#).await;
}

#[tokio::test]
async fn an_echoed_header_key_is_scrubbed_everywhere() {
    check_every_echo(
        r#"adapter = "openai"
options = { auth = "header:api-key" }"#,
    )
    .await;
}

#[tokio::test]
async fn an_echoed_query_key_is_scrubbed_everywhere() {
    check_every_echo(
        r#"adapter = "openai"
options = { auth = "query:key" }"#,
    )
    .await;
}

#[tokio::test]
async fn the_adapter_never_sees_an_echoed_key() {
    // The `reveal` adapter repeats in its error message every header and the
    // body it was given: what reaches the caller is what the adapter saw.
    let mock = MockProvider::start("p").await;
    let config = config(
        &mock,
        r#"adapter = "misbehave"
options = { mode = "reveal" }"#,
    );
    let gw = Gateway::start_with_files(
        &config,
        &[("KEY_P", KEY)],
        &[("adapters", "misbehave.wasm", wasm("switchboard_test_misbehave"))],
    );
    for form in FORMS {
        mock.script([echo_error(500, form)]);
        let reply = post(&gw.chat_url(), &chat("chat")).await;
        assert_eq!(reply.status, 502);
        let text = reply.text();
        assert!(text.contains("x-echo-key"), "the adapter saw the headers: {text}");
        assert!(text.contains("Incorrect API key provided: [redacted]"), "{text}");
        assert_clean("what the adapter saw", &text);
    }
    // A successful answer is passed on byte for byte.
    mock.script([Script::Answer("all fine")]);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "all fine");
}
