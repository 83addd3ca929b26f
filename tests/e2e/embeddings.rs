//! `POST /v1/embeddings`: routed to embedding models with failover, through
//! OpenAI-format and Gemini adapters, floats or base64, recorded in the
//! ledger; chat and embedding models kept apart.

use crate::support::*;
use serde_json::{Value, json};

/// Providers `oai` (OpenAI format) and `goo` (Gemini), each with an
/// embedding model and a chat model; routes `embed` (oai then goo),
/// `embed-gemini` (goo only) and `chat` (oai's chat model).
fn config(oai: &MockProvider, goo: &MockProvider) -> String {
    format!(
        r#"
[ledger]
path = "ledger.db"

[providers.oai]
adapter = "openai"
base_url = "{}"
api_key_env = "KEY_A"
timeout_ms = 2000
[providers.oai.models.text-embedding-3-small]
input_price = 0.02
context_window = 8191
capabilities = ["embeddings"]
[providers.oai.models.gpt-4o]

[providers.goo]
adapter = "gemini"
base_url = "http://{}"
api_key_env = "KEY_B"
timeout_ms = 2000
[providers.goo.models.gemini-embedding-001]
input_price = 0.15
context_window = 2048
capabilities = ["embeddings"]

[routes.embed]
targets = ["oai/text-embedding-3-small", "goo/gemini-embedding-001"]
[routes.embed-gemini]
targets = ["goo/gemini-embedding-001"]
[routes.chat]
targets = ["oai/gpt-4o"]
"#,
        oai.url(),
        goo.addr
    )
}

fn openai_list(vectors: &[&[f64]]) -> String {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
        .collect();
    json!({"object": "list", "data": data, "model": "text-embedding-3-small",
           "usage": {"prompt_tokens": 5, "total_tokens": 5}})
    .to_string()
}

async fn embed(gw: &Gateway, body: Value) -> Reply {
    post(&format!("{}/v1/embeddings", gw.url), &body).await
}

#[tokio::test]
async fn openai_format_embeddings_pass_through_with_their_usage_and_cost() {
    let (oai, goo) = (MockProvider::start("oai").await, MockProvider::start("goo").await);
    oai.script([Script::Status(
        200,
        vec![],
        openai_list(&[&[0.5, -1.0], &[0.25, 2.0]]),
    )]);
    let gw = Gateway::start(&config(&oai, &goo), KEYS);
    let reply = embed(
        &gw,
        json!({"model": "embed", "input": ["hello", "world"], "dimensions": 2}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let list = reply.json();
    schema::embeddings(&list);
    assert_eq!(list["data"][1]["embedding"], json!([0.25, 2.0]));
    assert_eq!(list["usage"]["prompt_tokens"], 5);
    assert_eq!(reply.header("x-switchboard-provider"), "oai");
    // 5 tokens at $0.02 per million.
    assert_eq!(reply.header("x-switchboard-cost-usd"), "0.00000010");
    let seen = &oai.seen()[0];
    assert_eq!(seen.path, "/v1/embeddings");
    assert_eq!(
        seen.body,
        json!({"model": "text-embedding-3-small", "input": ["hello", "world"], "dimensions": 2})
    );

    let db = crate::ledger::records(&gw, 1).await;
    let record = crate::ledger::row(&db, reply.header("x-switchboard-request-id"));
    assert_eq!(record["route"], "embed");
    assert_eq!(record["endpoint"], "/v1/embeddings");
    assert_eq!(record["model"], "text-embedding-3-small");
    assert_eq!(record["prompt_tokens"], 5);
    assert_eq!(record["charged_usd"], 5.0 * 0.02 / 1e6);
}

#[tokio::test]
async fn gemini_embeds_through_batch_embed_contents_and_a_failover_reaches_it() {
    let (oai, goo) = (MockProvider::start("oai").await, MockProvider::start("goo").await);
    oai.set_default(Script::Status(
        500,
        vec![],
        r#"{"error":{"message":"boom","type":"server_error"}}"#.into(),
    ));
    let gemini = json!({"embeddings": [{"values": [0.5, 1.0, -2.0]}]}).to_string();
    goo.set_default(Script::Status(200, vec![], gemini));
    let gw = Gateway::start(&config(&oai, &goo), KEYS);

    let reply = embed(
        &gw,
        json!({"model": "embed", "input": "hello there", "dimensions": 3}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let list = reply.json();
    schema::embeddings(&list);
    assert_eq!(list["data"][0]["embedding"], json!([0.5, 1.0, -2.0]));
    assert_eq!(list["model"], "gemini-embedding-001");
    assert_eq!(reply.header("x-switchboard-provider"), "goo");
    assert!(reply.header("x-switchboard-attempts").parse::<u32>().unwrap() >= 2);
    // Gemini reports no tokens: the gateway's estimate stands in.
    assert_eq!(list["usage"], json!({"prompt_tokens": 2, "total_tokens": 2}));
    let seen = &goo.seen()[0];
    assert_eq!(
        seen.path,
        "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    );
    assert_eq!(seen.headers["x-goog-api-key"], "secret-key-b");
    assert_eq!(
        seen.body,
        json!({"requests": [{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello there"}]}, "outputDimensionality": 3}]})
    );

    // Base64 asked for: the floats come back as OpenAI encodes them.
    let reply = embed(
        &gw,
        json!({"model": "embed-gemini", "input": ["hi"], "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let encoded = reply.json()["data"][0]["embedding"].as_str().unwrap().to_string();
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
    let floats: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(floats, [0.5, 1.0, -2.0]);

    // Token ids cannot be sent to Gemini: a 400 that says so.
    let reply = embed(&gw, json!({"model": "embed-gemini", "input": [1, 2, 3]})).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply.text().contains("Gemini embeds text only"),
        "{}",
        reply.text()
    );
    let db = crate::ledger::records(&gw, 3).await;
    let estimated: bool = db
        .query_row(
            "SELECT cost_estimated FROM requests WHERE route = 'embed' AND status = 200",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(estimated, "a cost from the gateway's estimate is marked so");
}

#[tokio::test]
async fn chat_and_embedding_models_are_kept_apart_and_bad_input_is_refused() {
    let (oai, goo) = (MockProvider::start("oai").await, MockProvider::start("goo").await);
    let gw = Gateway::start(&config(&oai, &goo), KEYS);
    let reply = post(&gw.chat_url(), &chat("embed")).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("embedding models only"), "{}", reply.text());
    let reply = embed(&gw, json!({"model": "chat", "input": "hi"})).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("chat models only"), "{}", reply.text());
    for (body, param) in [
        (json!({"model": "embed", "input": ""}), "input"),
        (json!({"model": "embed", "input": [{"text": "hi"}]}), "input"),
        (
            json!({"model": "embed", "input": "hi", "encoding_format": "int8"}),
            "encoding_format",
        ),
        (json!({"input": "hi"}), "model"),
    ] {
        let reply = embed(&gw, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.json()["error"]["param"], param, "{body}");
    }
    let reply = embed(&gw, json!({"model": "nope", "input": "hi"})).await;
    assert_eq!(reply.status, 404);
    assert_eq!(oai.hits() + goo.hits(), 0);
}

#[tokio::test]
async fn models_are_listed_with_who_serves_them_and_where_in_either_apis_shape() {
    let (oai, goo) = (MockProvider::start("oai").await, MockProvider::start("goo").await);
    let gw = Gateway::start(&config(&oai, &goo), KEYS);
    let models = get(&format!("{}/v1/models", gw.url), &[]).await.json();
    let by_id = |id: &str| {
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap()
    };
    let embed = by_id("embed");
    assert_eq!(embed["owned_by"], "switchboard", "two providers serve it");
    assert_eq!(embed["endpoints"], json!(["/v1/embeddings"]));
    assert_eq!(
        embed["targets"],
        json!(["oai/text-embedding-3-small", "goo/gemini-embedding-001"])
    );
    let chat = by_id("chat");
    assert_eq!(chat["owned_by"], "oai");
    assert_eq!(
        chat["endpoints"],
        json!(["/v1/chat/completions", "/v1/messages", "/v1/responses"])
    );
    assert_eq!(chat["object"], "model");

    let listed = get(
        &format!("{}/v1/models", gw.url),
        &[("anthropic-version", "2023-06-01")],
    )
    .await
    .json();
    assert_eq!(
        listed,
        json!({"data": [{"type": "model", "id": "chat", "display_name": "chat", "created_at": "1970-01-01T00:00:00Z"}],
               "has_more": false, "first_id": "chat", "last_id": "chat"}),
        "only what a Messages caller can use"
    );
}
