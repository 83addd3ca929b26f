//! Typed calls into a provider adapter component.

use super::PluginError;
use super::bulkhead::{Bulkhead, CallLimits};
use super::sandbox::{PluginRuntime, Sandbox};
use super::types::{
    AdapterInfo, Capabilities, Completion, Decoded, InboundResponse, OutboundRequest, ProviderError,
    SseEvent, Target,
};
use super::v0_1::adapter as wit;
use std::sync::Arc;
use wasmtime::Store;
use wasmtime::component::ResourceAny;

/// One loaded version of an adapter, pre-instantiated; each call gets a fresh
/// instance, so no state leaks between requests.
pub struct AdapterPlugin {
    pub name: String,
    pub version: String,
    pub source: String,
    pub capabilities: Capabilities,
    pub bulkhead: Bulkhead,
    pre: wit::AdapterPre<Sandbox>,
    runtime: Arc<PluginRuntime>,
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
        let pre = runtime.prepare(bytes, "provider").await.and_then(|pre| {
            wit::AdapterPre::new(pre)
                .map_err(|e| format!("it does not match the `provider` interface: {e:#}"))
        })?;
        let mut plugin = AdapterPlugin {
            name: name.to_string(),
            version: String::new(),
            source: source.clone(),
            capabilities: Capabilities::empty(),
            bulkhead: Bulkhead::new(limits, source != "bundled"),
            pre,
            runtime: runtime.clone(),
        };
        let info = plugin
            .describe()
            .await
            .map_err(|e| format!("smoke call failed: {e}"))?;
        plugin.version = info.version;
        plugin.capabilities = info.capabilities;
        Ok(plugin)
    }

    /// A fresh instance whose deadline allows for `input` bytes.
    async fn instantiate(&self, input: usize) -> Result<(Store<Sandbox>, wit::Adapter), PluginError> {
        let limits = self.bulkhead.limits();
        let mut store = self
            .runtime
            .store(limits.deadline(input), Some(self.bulkhead.slow_lane()));
        let instance = match self.pre.instantiate_async(&mut store).await {
            Ok(instance) => instance,
            Err(e) => return Err(self.runtime.instantiate_error(&self.name, &store, e)),
        };
        Ok((store, instance))
    }

    /// One call on a fresh instance, inside the bulkhead.
    async fn call<R>(
        &self,
        input: usize,
        f: impl AsyncFnOnce(&wit::Guest, &mut Store<Sandbox>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let _place = self.bulkhead.enter(&self.name)?;
        let result = async {
            let (mut store, instance) = self.instantiate(input).await?;
            let result = f(instance.switchboard_plugin_provider(), &mut store).await;
            result.map_err(|e| self.runtime.call_error(&self.name, &store, e))
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

    pub async fn describe(&self) -> Result<AdapterInfo, PluginError> {
        let info = self
            .call(0, async |guest, store| guest.call_describe(store).await)
            .await?;
        Ok(info.into())
    }

    pub async fn build_request(
        &self,
        request: &[u8],
        target: &Target,
    ) -> Result<OutboundRequest, PluginError> {
        let target = wit::Target::from(target);
        let built = self
            .call(request.len(), async |guest, store| {
                guest.call_build_request(store, request, &target).await
            })
            .await?;
        built.map(Into::into).map_err(|reason| PluginError::Refused {
            plugin: self.name.clone(),
            reason,
        })
    }

    /// The outer error is the plugin failing; the inner one the adapter's
    /// verdict that the provider's answer was malformed.
    pub async fn parse_response(
        &self,
        response: InboundResponse,
        target: &Target,
    ) -> Result<Result<Completion, String>, PluginError> {
        // By value: the answer body crosses without another copy.
        let (response, target) = (wit::InboundResponse::from(response), wit::Target::from(target));
        let completion = self
            .call(response.body.len(), async |guest, store| {
                guest.call_parse_response(store, &response, &target).await
            })
            .await?;
        if let Ok(completion) = &completion
            && serde_json::from_slice::<serde::de::IgnoredAny>(&completion.body).is_err()
        {
            return Err(PluginError::Contract {
                plugin: self.name.clone(),
                detail: "translated answer is not valid JSON".into(),
            });
        }
        Ok(completion.map(Into::into))
    }

    pub async fn classify_error(
        &self,
        response: &InboundResponse,
        target: &Target,
    ) -> Result<ProviderError, PluginError> {
        let (response, target) = (wit::InboundResponse::from(response), wit::Target::from(target));
        let error = self
            .call(response.body.len(), async |guest, store| {
                guest.call_classify_error(store, &response, &target).await
            })
            .await?;
        Ok(error.into())
    }

    /// Start decoding one stream; the session keeps its own instance.
    pub async fn open_stream(
        self: &Arc<Self>,
        target: &Target,
        include_usage: bool,
    ) -> Result<StreamSession, PluginError> {
        let target = wit::Target::from(target);
        let _place = self.bulkhead.enter(&self.name)?;
        let opened = async {
            let (mut store, instance) = self.instantiate(0).await?;
            let decoder = instance
                .switchboard_plugin_provider()
                .stream_decoder()
                .call_constructor(&mut store, &target, include_usage)
                .await
                .map_err(|e| self.runtime.call_error(&self.name, &store, e))?;
            // The place is not held while the stream waits for its first bytes.
            self.runtime.end_call(&store);
            Ok((store, instance, decoder))
        }
        .await;
        self.settle(&opened);
        let (store, instance, decoder) = opened?;
        Ok(StreamSession {
            store,
            instance,
            decoder,
            plugin: self.clone(),
        })
    }
}

/// A stream decoder resource and the instance that owns it.
pub struct StreamSession {
    store: Store<Sandbox>,
    instance: wit::Adapter,
    decoder: ResourceAny,
    plugin: Arc<AdapterPlugin>,
}

impl StreamSession {
    /// Feed one upstream event. The outer error is the plugin failing; the
    /// inner one a provider error the adapter found in the stream.
    pub async fn feed(&mut self, event: SseEvent) -> Result<Result<Fed, ProviderError>, PluginError> {
        let event = wit::SseEvent::from(event);
        let plugin = &self.plugin;
        // Between events the decoder holds its memory, not a place.
        let _place = plugin.bulkhead.enter(&plugin.name)?;
        plugin.runtime.rearm(
            &mut self.store,
            plugin.bulkhead.limits().deadline(event.data.len()),
        );
        let _lane = plugin.runtime.lane_guard(&self.store);
        let decoded = self
            .instance
            .switchboard_plugin_provider()
            .stream_decoder()
            .call_feed(&mut self.store, self.decoder, &event)
            .await
            .map_err(|e| plugin.runtime.call_error(&plugin.name, &self.store, e));
        plugin.settle(&decoded);
        let decoded = decoded?;
        let decoded: Decoded = match decoded {
            Ok(decoded) => decoded.into(),
            Err(provider_error) => return Ok(Err(provider_error.into())),
        };
        // Checking that each chunk is JSON also tells whether the answer
        // has finished (a choice with a finish_reason).
        let mut finished = false;
        for chunk in &decoded.chunks {
            let shape: ChunkShape = serde_json::from_slice(chunk).map_err(|_| PluginError::Contract {
                plugin: self.plugin.name.clone(),
                detail: "stream chunk is not a valid chat.completion.chunk".into(),
            })?;
            finished |= shape.choices.iter().any(|c| c.finish_reason.is_some());
        }
        Ok(Ok(Fed { decoded, finished }))
    }
}

/// One decoded event, and whether its chunks carried a finish reason.
pub struct Fed {
    pub decoded: Decoded,
    pub finished: bool,
}

#[derive(serde::Deserialize)]
struct ChunkShape {
    #[serde(default)]
    choices: Vec<ChoiceShape>,
}

#[derive(serde::Deserialize)]
struct ChoiceShape {
    #[serde(default)]
    finish_reason: Option<String>,
}
