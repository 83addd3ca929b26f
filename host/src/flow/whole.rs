//! A whole (non-streaming) answer: attempts until one target's complete
//! answer is translated, hedged if the route asks.

use super::Received;
use super::attempts::{Attempt, Attempts};
use super::failure::{Failure, FlowError};
use super::hedge::{Hedge, Start, first_success};
use super::plan::PlannedAttempt;
use super::request::RequestBody;
use crate::gateway::{Gateway, RouteRef};
use crate::plugin::PluginSet;
use crate::plugin::types::Completion;
use crate::plugin::types::{ApiFormat, Usage};
use std::future::Future;

/// Who answered a request, and after how many attempts.
#[derive(Clone, Debug)]
pub struct AnsweredBy {
    pub provider: String,
    pub model: String,
    pub attempts: u32,
}

impl AnsweredBy {
    pub fn of(attempt: &Attempt<'_>, attempts: u32) -> AnsweredBy {
        AnsweredBy {
            provider: attempt.to.provider.name.clone(),
            model: attempt.to.target.model.clone(),
            attempts,
        }
    }
}

/// A whole answer: canonical chat completion JSON, or the caller's own
/// format when the answering target spoke it.
pub struct Answered {
    pub by: AnsweredBy,
    pub format: ApiFormat,
    pub body: Vec<u8>,
    pub usage: Option<Usage>,
    /// What the answer cost, in USD (what the caller is charged).
    pub cost_usd: f64,
}

/// Serve a non-streaming request.
pub async fn complete(
    gw: &Gateway,
    plugins: &PluginSet,
    route: RouteRef<'_>,
    plan: Vec<PlannedAttempt>,
    request: &RequestBody,
    hedge: Option<Hedge>,
    received: &Received,
) -> Result<Answered, FlowError> {
    answer(gw, plugins, route, plan, request, hedge, received, WholeAnswer).await
}

/// Serve an embeddings request: as [`complete`], through the adapters'
/// embeddings translation.
pub async fn embed(
    gw: &Gateway,
    plugins: &PluginSet,
    route: RouteRef<'_>,
    plan: Vec<PlannedAttempt>,
    request: &RequestBody,
    hedge: Option<Hedge>,
    received: &Received,
) -> Result<Answered, FlowError> {
    answer(gw, plugins, route, plan, request, hedge, received, Embeddings).await
}

/// Attempts until one target's whole answer of `kind` is had.
#[allow(clippy::too_many_arguments)]
async fn answer<S: Start<Answer = Completion>>(
    gw: &Gateway,
    plugins: &PluginSet,
    route: RouteRef<'_>,
    plan: Vec<PlannedAttempt>,
    request: &RequestBody,
    hedge: Option<Hedge>,
    received: &Received,
    kind: S,
) -> Result<Answered, FlowError> {
    let mut attempts = Attempts::new(false, gw, plugins, route, plan, received);
    let (attempt, completion) = first_success(&mut attempts, request, hedge, kind).await?;
    let cost_usd = attempts.succeeded(&attempt, completion.usage, completion.model, None);
    Ok(Answered {
        by: AnsweredBy::of(&attempt, attempts.made()),
        format: attempt.context.format,
        body: completion.body,
        usage: completion.usage,
        cost_usd,
    })
}

/// An embeddings attempt: the whole list.
struct Embeddings;

impl Start for Embeddings {
    type Answer = Completion;

    fn start<'a>(
        &'a self,
        attempt: &'a Attempt<'_>,
        request: &'a RequestBody,
    ) -> impl Future<Output = Result<Completion, Failure>> + Send + 'a {
        embed_once(attempt, request)
    }
}

async fn embed_once(attempt: &Attempt<'_>, request: &RequestBody) -> Result<Completion, Failure> {
    let body = request
        .bytes_for(ApiFormat::OpenAiChat, &attempt.to.target.model)
        .map_err(Failure::Untranslatable)?;
    let outbound = attempt
        .adapter
        .build_embeddings_request(body, &attempt.adapter_target)
        .await
        .map_err(Failure::Plugin)?;
    let response = attempt.send_built(&outbound).await?;
    let inbound = attempt.read_success(response).await?;
    let embeddings = attempt
        .adapter
        .parse_embeddings_response(inbound, &attempt.adapter_target)
        .await
        .map_err(Failure::Plugin)?
        .map_err(Failure::Malformed)?;
    Ok(Completion {
        body: embeddings.body,
        usage: embeddings.usage,
        model: None,
    })
}

/// A non-streaming attempt: the whole answer.
struct WholeAnswer;

impl Start for WholeAnswer {
    type Answer = Completion;

    fn start<'a>(
        &'a self,
        attempt: &'a Attempt<'_>,
        request: &'a RequestBody,
    ) -> impl Future<Output = Result<Completion, Failure>> + Send + 'a {
        once(attempt, request)
    }
}

async fn once(attempt: &Attempt<'_>, request: &RequestBody) -> Result<Completion, Failure> {
    let response = attempt.send(request).await?;
    let inbound = attempt.read_success(response).await?;
    attempt
        .adapter
        .parse_response(inbound, &attempt.adapter_target, &attempt.context)
        .await
        .map_err(Failure::Plugin)?
        .map_err(Failure::Malformed)
}
