//! A JSON value that validates against a JSON Schema, as clients send them:
//! `$ref` into `$defs`/`definitions` (pydantic's nested models), `anyOf`,
//! `oneOf`, `allOf`, `enum`, `const`, arrays with their bounds, required and
//! optional properties, string formats and number bounds. `pattern` cannot
//! be honoured in general; such a string is `"simulated"`.

use serde_json::{Map, Value, json};

/// Deeper than this, a recursive schema gets `null` (or an empty value).
const MAX_DEPTH: usize = 12;

/// A value for `schema`, whose `$ref`s resolve within `schema` itself.
pub fn example(schema: &Value) -> Value {
    Generator { root: schema }.value(schema, 0)
}

struct Generator<'a> {
    root: &'a Value,
}

impl Generator<'_> {
    fn resolve(&self, reference: &str) -> Option<&Value> {
        let path = reference.strip_prefix('#')?;
        path.split('/')
            .filter(|p| !p.is_empty())
            .try_fold(self.root, |node, part| {
                node.get(part.replace("~1", "/").replace("~0", "~"))
            })
    }

    fn value(&self, schema: &Value, depth: usize) -> Value {
        let Value::Object(s) = schema else {
            // `true` (anything) or a malformed schema.
            return json!("simulated");
        };
        if depth > MAX_DEPTH {
            return Value::Null;
        }
        if let Some(target) = s
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| self.resolve(r))
        {
            return self.value(target, depth + 1);
        }
        if let Some(value) = s.get("const") {
            return value.clone();
        }
        if let Some(first) = s.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
            return first.clone();
        }
        if let Some(default) = s.get("default") {
            return default.clone();
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(options) = s.get(key).and_then(Value::as_array) {
                // The first alternative that is not just `null`.
                let chosen = options
                    .iter()
                    .find(|o| o.get("type") != Some(&json!("null")))
                    .or(options.first());
                if let Some(chosen) = chosen {
                    return self.value(chosen, depth + 1);
                }
            }
        }
        if let Some(parts) = s.get("allOf").and_then(Value::as_array) {
            return self.value(&merge(s, parts, self), depth + 1);
        }
        match type_of(s) {
            "object" => self.object(s, depth),
            "array" => self.array(s, depth),
            "integer" => json!(number(s) as i64),
            "number" => json!(number(s)),
            "boolean" => json!(true),
            "null" => Value::Null,
            _ => string(s),
        }
    }

    fn object(&self, s: &Map<String, Value>, depth: usize) -> Value {
        let mut out = Map::new();
        if let Some(properties) = s.get("properties").and_then(Value::as_object) {
            // Optional properties too: a client's model reads them as given.
            for (name, property) in properties {
                out.insert(name.clone(), self.value(property, depth + 1));
            }
        }
        Value::Object(out)
    }

    fn array(&self, s: &Map<String, Value>, depth: usize) -> Value {
        let min = s.get("minItems").and_then(Value::as_u64).unwrap_or(1);
        let max = s.get("maxItems").and_then(Value::as_u64).unwrap_or(u64::MAX);
        let count = min.max(1).min(max).min(8) as usize;
        let mut items: Vec<Value> = s
            .get("prefixItems")
            .and_then(Value::as_array)
            .map(|prefix| prefix.iter().map(|p| self.value(p, depth + 1)).collect())
            .unwrap_or_default();
        let item = s.get("items").cloned().unwrap_or(json!({}));
        while items.len() < count {
            items.push(self.value(&item, depth + 1));
        }
        items.truncate(max.min(usize::MAX as u64) as usize);
        Value::Array(items)
    }
}

/// The type a schema asks for: its `type` (the first that is not `null`
/// when several are allowed), or what its keywords imply.
fn type_of(s: &Map<String, Value>) -> &str {
    match s.get("type") {
        Some(Value::String(t)) => t,
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if s.contains_key("properties") => "object",
        _ if s.contains_key("items") => "array",
        _ => "string",
    }
}

/// `allOf`: its parts' properties and requirements together.
fn merge(s: &Map<String, Value>, parts: &[Value], g: &Generator<'_>) -> Value {
    let mut merged = s.clone();
    merged.remove("allOf");
    let mut properties = merged
        .remove("properties")
        .and_then(|p| p.as_object().cloned())
        .unwrap_or_default();
    for part in parts {
        let part = part
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| g.resolve(r))
            .unwrap_or(part);
        if let Some(p) = part.get("properties").and_then(Value::as_object) {
            properties.extend(p.clone());
        }
        if let Some(t) = part.get("type") {
            merged.entry("type").or_insert(t.clone());
        }
    }
    if !properties.is_empty() {
        merged.insert("properties".into(), Value::Object(properties));
    }
    Value::Object(merged)
}

/// A number within the schema's bounds.
fn number(s: &Map<String, Value>) -> f64 {
    let get = |k: &str| s.get(k).and_then(Value::as_f64);
    let low = get("minimum").or(get("exclusiveMinimum").map(|m| m.floor() + 1.0));
    let high = get("maximum").or(get("exclusiveMaximum").map(|m| m.ceil() - 1.0));
    match (low, high) {
        (Some(low), _) => low,
        (None, Some(high)) => high.min(1.0),
        (None, None) => 1.0,
    }
}

/// A string of the schema's format and length.
fn string(s: &Map<String, Value>) -> Value {
    let text = match s.get("format").and_then(Value::as_str) {
        Some("date-time") => "2026-01-01T00:00:00Z".to_string(),
        Some("date") => "2026-01-01".into(),
        Some("time") => "00:00:00Z".into(),
        Some("email") => "simulated@example.com".into(),
        Some("uri" | "url") => "https://example.com/simulated".into(),
        Some("uuid") => "00000000-0000-4000-8000-000000000000".into(),
        Some("ipv4") => "192.0.2.1".into(),
        _ => "simulated".into(),
    };
    let min = s.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    let max = s.get("maxLength").and_then(Value::as_u64).map(|m| m as usize);
    let mut text = text;
    while text.chars().count() < min {
        text.push('.');
    }
    if let Some(max) = max {
        text = text.chars().take(max).collect();
    }
    Value::String(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(schema: Value) -> Value {
        let value = example(&schema);
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{value} against {schema}: {errors:?}");
        value
    }

    #[test]
    fn pydantics_nested_models_with_refs_optionals_enums_and_lists_validate() {
        // As `openai`'s `parse` sends `class Person(BaseModel)` with nested models.
        let schema = json!({
            "$defs": {
                "Address": {"type": "object", "properties": {
                    "street": {"type": "string"}, "zip": {"type": "string", "minLength": 5, "maxLength": 5}},
                    "required": ["street", "zip"], "additionalProperties": false},
                "Role": {"type": "string", "enum": ["admin", "user"]}
            },
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 18, "maximum": 99},
                "score": {"type": "number", "exclusiveMinimum": 0},
                "email": {"anyOf": [{"type": "string", "format": "email"}, {"type": "null"}]},
                "role": {"$ref": "#/$defs/Role"},
                "addresses": {"type": "array", "items": {"$ref": "#/$defs/Address"}, "minItems": 2},
                "tags": {"type": ["array", "null"], "items": {"type": "string"}},
                "active": {"type": "boolean"},
                "kind": {"const": "person"}
            },
            "required": ["name", "age", "score", "email", "role", "addresses", "tags", "active", "kind"],
            "additionalProperties": false
        });
        let value = valid(schema);
        assert_eq!(value["addresses"].as_array().unwrap().len(), 2);
        assert_eq!(value["role"], "admin");
        assert_eq!(value["age"], 18);
    }

    #[test]
    fn alternatives_all_of_and_recursion_stay_valid() {
        valid(
            json!({"oneOf": [{"type": "null"}, {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}]}),
        );
        valid(json!({"allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"type": "integer", "maximum": 0}}, "required": ["b"]}
        ]}));
        // A tree: each node has children of its own kind.
        let tree = json!({"$defs": {"Node": {"type": "object", "properties": {
            "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}, "maxItems": 0}}}}, "$ref": "#/$defs/Node"});
        valid(tree);
        valid(
            json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "minItems": 2, "maxItems": 2}),
        );
    }
}
