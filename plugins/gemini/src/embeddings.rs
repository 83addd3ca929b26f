//! OpenAI embeddings to and from Gemini's `batchEmbedContents`: one
//! request per input, `dimensions` as `outputDimensionality`.

use serde_json::{Value, json};

/// The `batchEmbedContents` body for an OpenAI embeddings request.
pub fn request(openai: &Value, model: &str) -> Result<Value, String> {
    let texts: Vec<&str> = match openai.get("input") {
        Some(Value::String(text)) => vec![text.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or("Gemini embeds text only: token-id inputs cannot be sent to it")
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("`input` must be a string or an array of strings".into()),
    };
    let dimensions = openai.get("dimensions").and_then(Value::as_u64);
    let requests: Vec<Value> = texts
        .into_iter()
        .map(|text| {
            let mut one = json!({"model": format!("models/{model}"), "content": {"parts": [{"text": text}]}});
            if let Some(d) = dimensions {
                one["outputDimensionality"] = json!(d);
            }
            one
        })
        .collect();
    Ok(json!({"requests": requests}))
}

/// Gemini's answer as an OpenAI embeddings list, and its prompt tokens when
/// Gemini reported them (it may not: then the list has no `usage`).
pub fn response(answer: &Value, model: &str) -> Result<(Value, Option<u32>), String> {
    let embeddings = answer
        .get("embeddings")
        .and_then(Value::as_array)
        .ok_or("provider answer has no embeddings")?;
    let data: Vec<Value> = embeddings
        .iter()
        .enumerate()
        .map(|(index, e)| {
            let values = e
                .get("values")
                .filter(|v| v.is_array())
                .ok_or("an embedding without values")?;
            Ok(json!({"object": "embedding", "index": index, "embedding": values}))
        })
        .collect::<Result<_, &str>>()?;
    let prompt = answer
        .get("usageMetadata")
        .and_then(|u| u.get("promptTokenCount"))
        .and_then(Value::as_u64)
        .map(|n| n as u32);
    let mut list = json!({"object": "list", "data": data, "model": model});
    if let Some(n) = prompt {
        list["usage"] = json!({"prompt_tokens": n, "total_tokens": n});
    }
    Ok((list, prompt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_input_is_one_request_with_its_dimensions() {
        let body = request(
            &json!({"input": ["a", "b"], "dimensions": 256}),
            "gemini-embedding-001",
        )
        .unwrap();
        assert_eq!(body["requests"].as_array().unwrap().len(), 2);
        assert_eq!(body["requests"][1]["content"]["parts"][0]["text"], "b");
        assert_eq!(body["requests"][0]["model"], "models/gemini-embedding-001");
        assert_eq!(body["requests"][0]["outputDimensionality"], 256);
        assert!(
            request(&json!({"input": [1, 2]}), "m")
                .unwrap_err()
                .contains("token")
        );
    }

    #[test]
    fn the_answer_is_an_openai_list_with_usage_only_when_reported() {
        let (list, prompt) = response(
            &json!({"embeddings": [{"values": [0.5, 1.0]}, {"values": [0.25]}]}),
            "m",
        )
        .unwrap();
        assert_eq!(list["data"][1]["index"], 1);
        assert_eq!(list["data"][0]["embedding"], json!([0.5, 1.0]));
        assert!(list.get("usage").is_none() && prompt.is_none());
        let (list, prompt) = response(
            &json!({"embeddings": [{"values": [0.5]}], "usageMetadata": {"promptTokenCount": 4}}),
            "m",
        )
        .unwrap();
        assert_eq!(
            (list["usage"]["total_tokens"].as_u64(), prompt),
            (Some(4), Some(4))
        );
    }
}
