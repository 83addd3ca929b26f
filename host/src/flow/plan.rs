//! Turns a request into a plan: the route's candidates that can take it
//! and can be tried now, with live health, ordered by the route's policy
//! (or, if the policy fails, by the configured order).

use super::failure::{Answer, FlowError};
use crate::facts::Facts;
use crate::gateway::{Gateway, RouteRef};
use crate::metrics::PluginLabels;
use crate::plugin::types::{Candidate, Capabilities, CircuitState, HedgeChoice};
use crate::plugin::{PluginSet, Unavailable};
use std::time::Duration;
use tokio::time::Instant;

/// One planned attempt: an index into the route's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedAttempt {
    pub target: usize,
    pub timeout: Option<Duration>,
}

/// A plan: the attempts in order, and whether the policy asked for a hedge.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub attempts: Vec<PlannedAttempt>,
    pub hedge: HedgeChoice,
    /// The policy's inputs and answer, when the route records decisions.
    pub decision: Option<String>,
}

/// The plan for a request that arrived at `started`. When every candidate
/// is cooling down after a 429 (or has its circuit open), the shortest
/// cooldown is waited out first, if it is within the route's
/// `max_cooldown_wait_ms` and its deadline. The policy is offered only the
/// candidates that can be tried now, and is not asked when there are none.
pub async fn plan(
    gw: &Gateway,
    plugins: &PluginSet,
    route_ref: RouteRef<'_>,
    facts: &Facts,
    started: Instant,
) -> Result<Planned, FlowError> {
    let route = route_ref.config;
    let mut offered = candidates(plugins, route_ref, facts, Instant::now())?;
    if let Some(wait) = shortest_cooldown_if_all_cooling(&offered)
        && wait <= route.max_cooldown_wait
        && Instant::now() + wait < started + route.timeout
    {
        tracing::debug!(route = %route.name, wait_ms = wait.as_millis() as u64, "every target is cooling down; waiting");
        tokio::time::sleep(wait).await;
        offered = candidates(plugins, route_ref, facts, Instant::now())?;
    }
    let (candidates, unusable): (Vec<Candidate>, Vec<Candidate>) = offered.into_iter().partition(usable_now);
    if candidates.is_empty() {
        return Err(none_usable(&route.name, &unusable));
    }

    let policy_facts = facts.for_policy(&route.name);
    let from_policy = match plugins.policy(&route.policy) {
        Err(Unavailable::NotLoaded) => Err("not loaded"),
        Err(Unavailable::Quarantined) => Err("quarantined"),
        Ok(policy) => policy
            .plan(&policy_facts, &candidates, &route.policy_config_json)
            .await
            .map_err(|error| {
                tracing::warn!(route = %route.name, %error, "policy failed; using the configured order");
                gw.metrics
                    .plugin_failures
                    .get_or_create(&PluginLabels {
                        plugin: policy.name.clone(),
                        reason: error.kind(),
                    })
                    .inc();
                error.kind()
            }),
    };
    let decided_by = match &from_policy {
        Ok(_) => route.policy.as_str(),
        Err(_) => "configured order",
    };
    let (attempts, hedge): (Vec<PlannedAttempt>, HedgeChoice) = match from_policy {
        Ok(plan) => (
            plan.steps
                .into_iter()
                .map(|a| PlannedAttempt {
                    target: a.candidate as usize,
                    timeout: a.timeout_ms.map(Duration::from_millis),
                })
                .collect(),
            plan.hedge,
        ),
        Err(reason) => {
            gw.metrics
                .policy_fallbacks
                .get_or_create(&PluginLabels {
                    plugin: route.policy.clone(),
                    reason,
                })
                .inc();
            let attempts = candidates
                .iter()
                .map(|c| PlannedAttempt {
                    target: c.index as usize,
                    timeout: None,
                })
                .collect();
            (attempts, HedgeChoice::Route)
        }
    };
    if attempts.is_empty() {
        return Err(FlowError::new(
            Answer::Unavailable,
            format!(
                "The routing policy of `{}` found no provider acceptable for this request.",
                route.name
            ),
        ));
    }
    tracing::debug!(route = %route.name, plan = ?attempts, ?hedge, "plan");
    let decision = gw.config.record_decisions().then(|| {
        let steps: Vec<u32> = attempts.iter().map(|a| a.target as u32).collect();
        serde_json::json!({
            "policy": route.policy,
            "decided_by": decided_by,
            "facts": policy_facts,
            "candidates": candidates,
            "plan": steps,
            "hedge": format!("{hedge:?}"),
        })
        .to_string()
    });
    Ok(Planned {
        attempts,
        hedge,
        decision,
    })
}

/// Whether a candidate can be tried now: not cooling down after a 429, and
/// its circuit not open (a half-open circuit lets a probe through).
fn usable_now(candidate: &Candidate) -> bool {
    candidate.health.rate_limited_for_ms == 0 && candidate.health.circuit != CircuitState::Open
}

/// The answer when no candidate can be tried now: a 429 with the shortest
/// cooldown if any is cooling down, else a 503 (circuits open).
fn none_usable(route: &str, unusable: &[Candidate]) -> FlowError {
    let cooldown = unusable
        .iter()
        .map(|c| c.health.rate_limited_for_ms)
        .filter(|ms| *ms > 0)
        .min();
    match cooldown {
        Some(ms) => FlowError::rate_limited(
            format!("Every provider of `{route}` is rate-limited right now; retry later."),
            Duration::from_millis(ms),
        ),
        None => FlowError::new(
            Answer::Unavailable,
            format!(
                "No provider of `{route}` is available right now (circuits open after repeated failures)."
            ),
        ),
    }
}

/// The shortest cooldown, when no candidate can be tried now: each is
/// cooling down or has its circuit open, and at least one is cooling down.
fn shortest_cooldown_if_all_cooling(candidates: &[Candidate]) -> Option<Duration> {
    if candidates.iter().any(usable_now) {
        return None;
    }
    // A target whose circuit is open stays unusable when its cooldown ends.
    candidates
        .iter()
        .filter(|c| c.health.circuit != CircuitState::Open)
        .map(|c| c.health.rate_limited_for_ms)
        .filter(|ms| *ms > 0)
        .min()
        .map(Duration::from_millis)
}

/// The route's targets that can take this request, with their health. A
/// target can do what its model is configured for, as far as its adapter
/// says it can translate.
fn candidates(
    plugins: &PluginSet,
    route_ref: RouteRef<'_>,
    facts: &Facts,
    now: Instant,
) -> Result<Vec<Candidate>, FlowError> {
    let route = route_ref.config;
    let needed_tokens = facts.estimated_prompt_tokens as u64 + facts.max_output_tokens.unwrap_or(0) as u64;
    let (mut disabled, mut lacking, mut too_small) = (Vec::new(), Capabilities::empty(), 0u32);
    let mut kind_mismatch = 0u32;
    let mut out = Vec::new();
    for resolved in route_ref.targets() {
        let (index, target, provider) = (resolved.index, resolved.target, resolved.provider);
        if let Some(reason) = &provider.disabled {
            disabled.push(format!("{}: {reason}", provider.name));
            continue;
        }
        let model = &provider.models[&target.model];
        let mut capabilities = capabilities(&model.capabilities);
        // An adapter that is not loaded fails its attempts with the reason.
        if let Ok(adapter) = plugins.adapter(&provider.adapter) {
            capabilities = capabilities.intersection(adapter.capabilities());
        }
        // Embedding models answer embeddings only, and chat models chat only.
        let embeds = model
            .capabilities
            .contains(&crate::config::Capability::Embeddings);
        if embeds != facts.needs.contains(Capabilities::EMBEDDINGS) {
            kind_mismatch += 1;
            continue;
        }
        if !capabilities.contains(facts.needs) {
            for (flag, _) in FLAG_NAMES
                .iter()
                .filter(|(f, _)| facts.needs.contains(*f) && !capabilities.contains(*f))
            {
                lacking |= *flag;
            }
            continue;
        }
        if needed_tokens > model.context_window as u64 {
            too_small += 1;
            continue;
        }
        out.push(Candidate {
            index: index as u32,
            provider: provider.name.clone(),
            model: target.model.clone(),
            input_price_per_mtok: model.input_price,
            output_price_per_mtok: model.output_price,
            context_window: model.context_window,
            capabilities,
            health: target.health.view(now),
        });
    }
    if !out.is_empty() {
        return Ok(out);
    }
    Err(if too_small > 0 {
        FlowError::new(
            Answer::ContextLength,
            format!(
                "The request needs about {needed_tokens} tokens (prompt estimate plus max_tokens), more than any model of `{}` accepts.",
                route.name
            ),
        )
    } else if kind_mismatch > 0 && lacking == Capabilities::empty() && disabled.is_empty() {
        let (asked, serves) = if facts.needs.contains(Capabilities::EMBEDDINGS) {
            ("embeddings", "chat models only")
        } else {
            ("chat", "embedding models only (POST /v1/embeddings)")
        };
        FlowError::new(
            Answer::BadRequest,
            format!("`{}` serves {serves}; this request asks for {asked}.", route.name),
        )
    } else if lacking != Capabilities::empty() {
        FlowError::new(
            Answer::BadRequest,
            format!(
                "No model of `{}` supports what this request needs: {}.",
                route.name,
                names(lacking).join(", ")
            ),
        )
    } else {
        FlowError::new(
            Answer::Unavailable,
            format!(
                "No provider of `{}` is configured: {}.",
                route.name,
                disabled.join("; ")
            ),
        )
    })
}

pub fn capabilities(list: &[crate::config::Capability]) -> Capabilities {
    use crate::config::Capability::*;
    list.iter().fold(Capabilities::empty(), |acc, c| {
        acc | match c {
            Tools => Capabilities::TOOLS,
            Images => Capabilities::IMAGES,
            JsonSchema => Capabilities::JSON_SCHEMA,
            Streaming => Capabilities::STREAMING,
            Embeddings => Capabilities::EMBEDDINGS,
            Prefill => Capabilities::empty(),
        }
    })
}

const FLAG_NAMES: [(Capabilities, &str); 5] = [
    (Capabilities::TOOLS, "tools"),
    (Capabilities::IMAGES, "images"),
    (Capabilities::JSON_SCHEMA, "json_schema"),
    (Capabilities::STREAMING, "streaming"),
    (Capabilities::EMBEDDINGS, "embeddings"),
];

fn names(caps: Capabilities) -> Vec<&'static str> {
    FLAG_NAMES
        .iter()
        .filter(|(c, _)| caps.contains(*c))
        .map(|(_, n)| *n)
        .collect()
}
