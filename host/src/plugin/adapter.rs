//! Typed calls into a provider adapter component, whichever contract
//! version it was built for.

use super::PluginError;
use super::bulkhead::{Bulkhead, CallLimits};
use super::contract::Version;
use super::convert::{instantiate_pre, on_0_2_or_0_3, on_every_version};
use super::pool::{self, InstancePool};
use super::sandbox::{PluginRuntime, Sandbox};
use super::types::{
    AdapterInfo, ApiFormat, Capabilities, Completion, Decoded, Embeddings, ErrorClass, EventData,
    InboundResponse, OutboundRequest, ProviderError, RequestContext, SseEvent, Target,
};
use super::{v0_1, v0_2, v0_3};
use crate::chunk::{ChunkReader, Seen};
use std::sync::Arc;
use std::time::Duration;
use switchboard_guest::scan::is_json_text;
use wasmtime::Store;
use wasmtime::component::ResourceAny;

/// One loaded version of an adapter, pre-instantiated. Each call gets a
/// fresh instance, or, when the adapter declares itself stateless, one kept
/// from an earlier call that returned normally.
pub struct AdapterPlugin {
    pub name: String,
    pub source: String,
    pub bulkhead: Bulkhead,
    /// What `describe` said.
    pub info: AdapterInfo,
    pub contract: Version,
    pre: Pre,
    runtime: Arc<PluginRuntime>,
    /// Instances kept for the next calls (none unless the adapter is stateless).
    pool: Arc<InstancePool<Instance>>,
}

enum Pre {
    V0_1(v0_1::adapter::AdapterPre<Sandbox>),
    V0_2(v0_2::adapter::AdapterPre<Sandbox>),
    V0_3(v0_3::adapter::AdapterPre<Sandbox>),
}

/// An instance, bound by its contract version.
enum Instance {
    V0_1(v0_1::adapter::Adapter),
    V0_2(v0_2::adapter::Adapter),
    V0_3(v0_3::adapter::Adapter),
}

impl AdapterPlugin {
    /// Compile, check the contract, pre-instantiate and smoke-call `describe`.
    /// `source` is the file, or `"bundled"` (never quarantined).
    pub async fn load(
        runtime: &Arc<PluginRuntime>,
        name: &str,
        source: String,
        bytes: Vec<u8>,
        limits: CallLimits,
    ) -> Result<Self, String> {
        let (pre, contract) = runtime.prepare(bytes, "provider").await?;
        let mismatch = |e: wasmtime::Error| format!("it does not match the `provider` interface: {e:#}");
        let pre = match contract {
            Version::V0_1 => Pre::V0_1(v0_1::adapter::AdapterPre::new(pre).map_err(mismatch)?),
            Version::V0_2 => Pre::V0_2(v0_2::adapter::AdapterPre::new(pre).map_err(mismatch)?),
            Version::V0_3 => Pre::V0_3(v0_3::adapter::AdapterPre::new(pre).map_err(mismatch)?),
        };
        let mut plugin = AdapterPlugin {
            name: name.to_string(),
            source: source.clone(),
            bulkhead: Bulkhead::new(limits, source != "bundled"),
            info: AdapterInfo {
                version: String::new(),
                capabilities: Capabilities::empty(),
                native_formats: Vec::new(),
                stateless: false,
            },
            contract,
            pre,
            runtime: runtime.clone(),
            pool: Arc::default(),
        };
        plugin.info = plugin
            .describe()
            .await
            .map_err(|e| format!("smoke call failed: {e}"))?;
        if plugin.info.stateless && limits.reuse {
            plugin.pool = runtime.pool(pool::capacity());
        }
        Ok(plugin)
    }

    /// What the adapter can translate.
    pub fn capabilities(&self) -> Capabilities {
        self.info.capabilities
    }

    /// Calls served by a kept instance, and instances kept now.
    pub fn reuse(&self) -> (u64, usize) {
        (self.pool.reused(), self.pool.idle())
    }

    /// Whether the adapter takes requests in `format` as they are.
    pub fn speaks_natively(&self, format: ApiFormat) -> bool {
        format == ApiFormat::OpenAiChat || self.info.native_formats.contains(&format)
    }

    /// A fresh instance with `deadline` armed.
    async fn instantiate(&self, deadline: Duration) -> Result<(Store<Sandbox>, Instance), PluginError> {
        let make = |mut store: Store<Sandbox>| async move {
            let instance = instantiate_pre!(&self.pre, &mut store);
            (store, instance)
        };
        let store = || self.runtime.store(deadline, Some(self.bulkhead.slow_lane()));
        self.runtime.instantiate(&self.name, store, make).await
    }

    /// One call on a fresh instance, inside the bulkhead.
    async fn call<R>(
        &self,
        input: usize,
        f: impl AsyncFnOnce(&Instance, &mut Store<Sandbox>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let _place = self.bulkhead.enter(&self.name)?;
        let result = async {
            let deadline = self.bulkhead.limits().deadline(input);
            let (mut store, instance) = self
                .pool
                .checkout(&self.runtime, deadline, || self.instantiate(deadline))
                .await?;
            match f(&instance, &mut store).await {
                Ok(answer) => {
                    self.runtime.end_call(&mut store);
                    self.pool.put(store, instance);
                    Ok(answer)
                }
                Err(e) => Err(self.runtime.call_error(&self.name, &store, e)),
            }
        }
        .await;
        self.settle(&result);
        result
    }

    fn settle<R>(&self, result: &Result<R, PluginError>) {
        if self.bulkhead.record(result) {
            tracing::error!(plugin = %self.name, source = %self.source, limit = self.bulkhead.limits().quarantine_after, "adapter quarantined after repeated traps or timeouts; an earlier version serves if there is one");
        }
    }

    fn refused(&self, reason: String) -> PluginError {
        PluginError::Refused {
            plugin: self.name.clone(),
            reason,
        }
    }

    fn contract(&self, detail: impl Into<String>) -> PluginError {
        PluginError::Contract {
            plugin: self.name.clone(),
            detail: detail.into(),
        }
    }

    pub async fn describe(&self) -> Result<AdapterInfo, PluginError> {
        self.call(0, async |instance, store| {
            on_every_version!(instance, |i| i
                .switchboard_plugin_provider()
                .call_describe(store)
                .await
                .map(Into::into))
        })
        .await
    }

    /// Check a provider's options. A 0.1 adapter cannot: its options are
    /// only checked by the requests that use them.
    pub async fn validate_options(&self, options: &str) -> Result<(), PluginError> {
        self.call(options.len(), async |instance, store| {
            on_0_2_or_0_3!(instance, |i| i
                .switchboard_plugin_provider()
                .call_validate_options(store, options)
                .await,
            Instance::V0_1(_) => Ok(Ok(())))
        })
        .await?
        .map_err(|reason| self.refused(reason))
    }

    /// Translate `request` (canonical JSON, or the caller's body in a native
    /// `context.format`) into the provider request.
    pub async fn build_request(
        &self,
        request: Vec<u8>,
        target: &Target,
        context: &RequestContext,
    ) -> Result<OutboundRequest, PluginError> {
        let input = request.len();
        let built = self
            .call(input, async move |instance, store| {
                on_0_2_or_0_3!(instance, |v, i| {
                    let (target, context) = (
                        v::adapter::Target::from(target),
                        v::adapter::RequestContext::from(context),
                    );
                    let built = i
                        .switchboard_plugin_provider()
                        .call_build_request(store, &request, &target, &context)
                        .await?;
                    Ok(built.map(|r| v::outbound(r, request)))
                },
                Instance::V0_1(i) => {
                    let target = v0_1::adapter::Target::from(target);
                    let built = i
                        .switchboard_plugin_provider()
                        .call_build_request(store, &request, &target)
                        .await?;
                    Ok(built.map(Into::into))
                })
            })
            .await?;
        built.map_err(|reason| self.refused(reason))
    }

    /// The outer error is the plugin failing; the inner one the adapter's
    /// verdict that the provider's answer was malformed.
    pub async fn parse_response(
        &self,
        response: InboundResponse,
        target: &Target,
        context: &RequestContext,
    ) -> Result<Result<Completion, String>, PluginError> {
        let input = response.body.len();
        let completion = self
            .call(input, async move |instance, store| {
                // By value: the answer body crosses without another copy.
                on_0_2_or_0_3!(instance, |v, i| {
                    let (mut response, target, context) = (
                        v::adapter::InboundResponse::from(response),
                        v::adapter::Target::from(target),
                        v::adapter::RequestContext::from(context),
                    );
                    let parsed = i
                        .switchboard_plugin_provider()
                        .call_parse_response(store, &response, &target, &context)
                        .await?;
                    let answered = std::mem::take(&mut response.body);
                    Ok(parsed.map(|c| v::completion(c, answered)))
                },
                Instance::V0_1(i) => {
                    let (response, target) = (
                        v0_1::adapter::InboundResponse::from(response),
                        v0_1::adapter::Target::from(target),
                    );
                    let parsed = i
                        .switchboard_plugin_provider()
                        .call_parse_response(store, &response, &target)
                        .await?;
                    Ok(parsed.map(Into::into))
                })
            })
            .await?;
        if let Ok(completion) = &completion
            && !is_json_text(&completion.body)
        {
            return Err(self.contract("translated answer is not valid JSON"));
        }
        Ok(completion)
    }

    pub async fn classify_error(
        &self,
        response: &InboundResponse,
        target: &Target,
    ) -> Result<ProviderError, PluginError> {
        self.call(response.body.len(), async |instance, store| {
            on_every_version!(instance, |v, i| {
                let (response, target) = (
                    v::adapter::InboundResponse::from(response),
                    v::adapter::Target::from(target),
                );
                i.switchboard_plugin_provider()
                    .call_classify_error(store, &response, &target)
                    .await
                    .map(Into::into)
            })
        })
        .await
    }

    /// Translate an embeddings request; only for an adapter that declares
    /// the `embeddings` capability.
    pub async fn build_embeddings_request(
        &self,
        request: Vec<u8>,
        target: &Target,
    ) -> Result<OutboundRequest, PluginError> {
        if !self.capabilities().contains(Capabilities::EMBEDDINGS) {
            return Err(self.refused("this adapter does not translate embeddings".into()));
        }
        let built = self
            .call(request.len(), async move |instance, store| {
                on_0_2_or_0_3!(instance, |v, i| {
                    let target = v::adapter::Target::from(target);
                    let built = i
                        .switchboard_plugin_provider()
                        .call_build_embeddings_request(store, &request, &target)
                        .await?;
                    Ok(built.map(|r| v::outbound(r, request)))
                },
                Instance::V0_1(_) => Ok(Err("contract 0.1 has no embeddings".into())))
            })
            .await?;
        built.map_err(|reason| self.refused(reason))
    }

    /// Translate an embeddings answer (outer error: the plugin failed;
    /// inner: the answer was malformed).
    pub async fn parse_embeddings_response(
        &self,
        response: InboundResponse,
        target: &Target,
    ) -> Result<Result<Embeddings, String>, PluginError> {
        if !self.capabilities().contains(Capabilities::EMBEDDINGS) {
            return Err(self.refused("this adapter does not translate embeddings".into()));
        }
        let parsed = self
            .call(response.body.len(), async move |instance, store| {
                on_0_2_or_0_3!(instance, |v, i| {
                    let (mut response, target) = (
                        v::adapter::InboundResponse::from(response),
                        v::adapter::Target::from(target),
                    );
                    let parsed = i
                        .switchboard_plugin_provider()
                        .call_parse_embeddings_response(store, &response, &target)
                        .await?;
                    let answered = std::mem::take(&mut response.body);
                    Ok(parsed.map(|e| v::embeddings(e, answered)))
                },
                Instance::V0_1(_) => Ok(Err("contract 0.1 has no embeddings".into())))
            })
            .await?;
        if let Ok(embeddings) = &parsed
            && !is_json_text(&embeddings.body)
        {
            return Err(self.contract("translated embeddings answer is not valid JSON"));
        }
        Ok(parsed)
    }

    /// Start decoding one stream; the session keeps its instance (a kept
    /// one, when the plugin is stateless) until the stream ends.
    pub async fn open_stream(
        self: &Arc<Self>,
        target: &Target,
        context: &RequestContext,
        include_usage: bool,
    ) -> Result<StreamSession, PluginError> {
        let _place = self.bulkhead.enter(&self.name)?;
        let opened = async {
            let deadline = self.bulkhead.limits().deadline(0);
            let (mut store, instance) = self
                .pool
                .checkout(&self.runtime, deadline, || self.instantiate(deadline))
                .await?;
            let decoder = on_0_2_or_0_3!(&instance, |i| {
                i.switchboard_plugin_provider()
                    .stream_decoder()
                    .call_constructor(&mut store, &target.into(), &context.into(), include_usage)
                    .await
            },
            Instance::V0_1(i) => {
                i.switchboard_plugin_provider()
                    .stream_decoder()
                    .call_constructor(&mut store, &target.into(), include_usage)
                    .await
            })
            .map_err(|e| self.runtime.call_error(&self.name, &store, e))?;
            // The place is not held while the stream waits for its first bytes.
            self.runtime.end_call(&mut store);
            Ok((store, instance, decoder))
        }
        .await;
        self.settle(&opened);
        let (store, instance, decoder) = opened?;
        Ok(StreamSession {
            open: Some(Open {
                store,
                instance,
                decoder,
                healthy: true,
            }),
            format: context.format,
            plugin: self.clone(),
            track: false,
            id_seen: false,
            chunks: ChunkReader::default(),
        })
    }
}

/// A stream decoder resource and the instance that owns it.
pub struct StreamSession {
    /// Taken when the session ends.
    open: Option<Open>,
    format: ApiFormat,
    plugin: Arc<AdapterPlugin>,
    /// Keep what each chat chunk says for continuation (`Fed::seen`).
    track: bool,
    /// A tracked chunk has given the stream's id (only the first is kept).
    id_seen: bool,
    /// Reads the stream's chat chunks one after another.
    chunks: ChunkReader,
}

struct Open {
    store: Store<Sandbox>,
    instance: Instance,
    decoder: ResourceAny,
    /// Every call of this session returned, none failing: the instance
    /// may be kept.
    healthy: bool,
}

impl Drop for StreamSession {
    /// A stateless adapter's instance goes back to its pool once the
    /// decoder is dropped inside it (its memory freed in the guest), so the
    /// next stream or call does not instantiate afresh. That drop is a
    /// guest call, so it runs in a task of its own.
    fn drop(&mut self) {
        let Some(Open {
            mut store,
            instance,
            decoder,
            healthy,
        }) = self.open.take()
        else {
            return;
        };
        if !healthy || !self.plugin.pool.keeps() || !store.data().reusable() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let plugin = self.plugin.clone();
        runtime.spawn(async move {
            plugin
                .runtime
                .rearm(&mut store, plugin.bulkhead.limits().deadline(0));
            let dropped = decoder.resource_drop_async(&mut store).await;
            plugin.runtime.end_call(&mut store);
            if dropped.is_ok() {
                plugin.pool.put(store, instance);
            }
        });
    }
}

impl StreamSession {
    /// Keep what each chat chunk says for continuing the stream, read in
    /// the same pass as the chunk's check (`Fed::seen`).
    pub fn track_text(&mut self) {
        self.track = true;
    }

    /// Feed the events of one socket read. The error is the plugin failing;
    /// a provider error the adapter found in the stream is in the answer,
    /// after the events decoded before it.
    pub async fn feed(&mut self, batch: Vec<SseEvent>) -> Result<Fed, PluginError> {
        let plugin = self.plugin.clone();
        // Between batches the decoder holds its memory, not a place.
        let _place = plugin.bulkhead.enter(&plugin.name)?;
        let input = batch.iter().map(|e| e.data.len()).sum();
        let open = self.open.as_mut().expect("a session is open until dropped");
        plugin
            .runtime
            .rearm(&mut open.store, plugin.bulkhead.limits().deadline(input));
        let _lane = plugin.runtime.lane_guard(&open.store);
        // A call dropped midway (the caller left, the idle deadline) leaves
        // the guest wherever it was, perhaps inside its allocator: such an
        // instance is never kept. Healthy again only once the call returns.
        let healthy = std::mem::replace(&mut open.healthy, false);
        let decoded = Self::decode(open, &plugin, batch).await;
        // Between batches the decoder runs no code: the ticker may sleep. (A
        // feed dropped midway skips this; its store stays counted, so the
        // ticker keeps ticking, until the session is dropped.)
        plugin.runtime.end_call(&mut open.store);
        plugin.settle(&decoded);
        open.healthy = healthy && decoded.is_ok();
        let mut decoded = decoded?;
        // Checking that each chunk is JSON also tells whether the answer
        // has finished (a choice with a finish_reason). Native formats
        // are the caller's business.
        let mut finished = false;
        let canonical = self.format == ApiFormat::OpenAiChat;
        let mut seen = Vec::new();
        let mut usage_at = None;
        let mut malformed = None;
        for (at, event) in decoded.events.iter().enumerate().filter(|_| canonical) {
            // A forwarded event is text already: not checked as UTF-8 again.
            let view = match &event.data {
                EventData::Written(bytes) => self.chunks.read(bytes),
                EventData::Forwarded(text) => self.chunks.read_text(text),
            };
            match view {
                Ok(view) => {
                    finished |= view.finished();
                    if view.has_usage() {
                        usage_at = Some(at);
                    }
                    if self.track {
                        let chunk = view.seen(!self.id_seen);
                        self.id_seen |= chunk.id.is_some();
                        seen.push(chunk);
                    }
                }
                // The provider's own event, which the adapter passed on
                // unread: the stream ends there, as the provider's fault.
                Err(e) if matches!(event.data, EventData::Forwarded(_)) => {
                    malformed = Some((at, e));
                    break;
                }
                Err(_) => {
                    open.healthy = false;
                    return Err(plugin.contract("stream chunk is not a valid chat.completion.chunk"));
                }
            }
        }
        if let Some((at, e)) = malformed {
            decoded.events.truncate(at);
            decoded.done = false;
            decoded.error = Some(ProviderError {
                class: ErrorClass::Server,
                message: format!("malformed stream event from provider: {e}"),
                retry_after_ms: None,
                http_status: None,
            });
        }
        Ok(Fed {
            decoded,
            finished,
            seen,
            usage_at,
        })
    }

    async fn decode(
        open: &mut Open,
        plugin: &AdapterPlugin,
        mut batch: Vec<SseEvent>,
    ) -> Result<Decoded, PluginError> {
        let store = &mut open.store;
        let decoder_handle = open.decoder;
        let failed = |store: &Store<Sandbox>, e| plugin.runtime.call_error(&plugin.name, store, e);
        match &open.instance {
            // 0.1 decodes one event per call.
            Instance::V0_1(i) => {
                let decoder = i.switchboard_plugin_provider().stream_decoder();
                let mut decoded = Decoded::default();
                for event in batch {
                    let event = v0_1::adapter::SseEvent::from(event);
                    match decoder.call_feed(&mut *store, decoder_handle, &event).await {
                        Err(e) => return Err(failed(store, e)),
                        Ok(Err(provider_error)) => {
                            decoded.error = Some(provider_error.into());
                            break;
                        }
                        Ok(Ok(one)) => decoded.add_v0_1(one),
                    }
                    if decoded.done {
                        break;
                    }
                }
                Ok(decoded)
            }
            // 0.2 takes each event's fields as strings of their own: the
            // events are moved there and back, not copied.
            Instance::V0_2(i) => {
                let theirs: Vec<v0_2::adapter::SseEvent> = batch.into_iter().map(Into::into).collect();
                let decoded = i
                    .switchboard_plugin_provider()
                    .stream_decoder()
                    .call_feed(&mut *store, decoder_handle, &theirs)
                    .await
                    .map_err(|e| failed(store, e))?;
                let mut batch: Vec<SseEvent> = theirs.into_iter().map(Into::into).collect();
                v0_2::decoded(decoded, &mut batch).map_err(|detail| plugin.contract(detail))
            }
            Instance::V0_3(i) => {
                let decoded = i
                    .switchboard_plugin_provider()
                    .stream_decoder()
                    .call_feed(&mut *store, decoder_handle, &v0_3::batch(&batch))
                    .await
                    .map_err(|e| failed(store, e))?;
                v0_3::decoded(decoded, &mut batch).map_err(|detail| plugin.contract(detail))
            }
        }
    }
}

/// One decoded batch, and whether its chunks carried a finish reason.
pub struct Fed {
    pub decoded: Decoded,
    pub finished: bool,
    /// What each chunk said, in order, when the session tracks text (a
    /// chat stream whose route continues broken streams); else empty.
    pub seen: Vec<Seen>,
    /// The position of the last chat chunk with a `usage` object.
    pub usage_at: Option<usize>,
}
