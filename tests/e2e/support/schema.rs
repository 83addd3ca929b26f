//! Validation against the official OpenAI schemas (`tests/schemas/`): every
//! answer and chunk the gateway sends must be what the API it speaks says.

use serde_json::{Value, json};
use std::sync::OnceLock;

fn validator(name: &str) -> jsonschema::Validator {
    let mut document: Value = serde_json::from_str(include_str!("../../schemas/openai.json")).unwrap();
    honour_nullable(&mut document);
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": document["components"],
    });
    jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("the {name} schema compiles: {e}"))
}

/// The document still marks some schemas `nullable: true` (OpenAPI 3.0's
/// way); in JSON Schema that is "this, or null".
fn honour_nullable(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.values_mut().for_each(honour_nullable);
            if map.remove("nullable") == Some(Value::Bool(true)) {
                let inner = Value::Object(std::mem::take(map));
                map.insert("anyOf".into(), json!([inner, {"type": "null"}]));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(honour_nullable),
        _ => {}
    }
}

fn check(validator: &jsonschema::Validator, what: &str, value: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match the official schema:\n{}\n{value:#}",
        errors.join("\n")
    );
}

/// Panics unless `answer` is a valid `CreateChatCompletionResponse`.
pub fn completion(answer: &Value) {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    check(
        VALIDATOR.get_or_init(|| validator("CreateChatCompletionResponse")),
        "chat completion",
        answer,
    );
}

/// Panics unless `chunk` is a valid `CreateChatCompletionStreamResponse`.
pub fn chunk(chunk: &Value) {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    check(
        VALIDATOR.get_or_init(|| validator("CreateChatCompletionStreamResponse")),
        "chat completion chunk",
        chunk,
    );
}

/// Panics unless `answer` is a valid `CreateEmbeddingResponse`.
pub fn embeddings(answer: &Value) {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    check(
        VALIDATOR.get_or_init(|| validator("CreateEmbeddingResponse")),
        "embeddings list",
        answer,
    );
}
/// Panics unless `answer` is a valid Responses API `Response`.
pub fn response(answer: &Value) {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    check(
        VALIDATOR.get_or_init(|| validator("Response")),
        "response",
        answer,
    );
}

/// Panics unless `event` is a valid `ResponseStreamEvent`.
pub fn response_event(event: &Value) {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    check(
        VALIDATOR.get_or_init(|| validator("ResponseStreamEvent")),
        "response stream event",
        event,
    );
}
