//! Typed calls into a provider adapter component.

use super::sandbox::{PluginRuntime, Sandbox};
use super::{PluginError, contract};
use std::sync::Arc;
use wasmtime::Store;
use wasmtime::component::ResourceAny;

/// Host bindings of the `adapter` world.
pub mod wit {
    wasmtime::component::bindgen!({ world: "adapter", path: "../wit" });
    pub use exports::switchboard::plugin::provider::*;
    pub use switchboard::plugin::types::{Capabilities, Usage};
}

/// One loaded version of an adapter, pre-instantiated; each call gets a fresh
/// instance, so no state leaks between requests.
pub struct AdapterPlugin {
    pub name: String,
    pub version: String,
    pub source: String,
    pub capabilities: wit::Capabilities,
    pre: wit::AdapterPre<Sandbox>,
    runtime: Arc<PluginRuntime>,
}

impl AdapterPlugin {
    /// Compile, check the contract, pre-instantiate and smoke-call `describe`.
    pub fn load(runtime: &Arc<PluginRuntime>, name: &str, source: String, bytes: &[u8]) -> Result<Self, String> {
        let component = runtime.compile(bytes).map_err(|e| format!("not a valid Wasm component: {e:#}"))?;
        contract::check(runtime.engine(), &component, "provider")?;
        let pre = runtime
            .linker()
            .instantiate_pre(&component)
            .and_then(wit::AdapterPre::new)
            .map_err(|e| format!("it needs imports the sandbox does not provide: {e:#}"))?;
        let mut plugin = AdapterPlugin {
            name: name.to_string(),
            version: String::new(),
            source,
            capabilities: wit::Capabilities::empty(),
            pre,
            runtime: runtime.clone(),
        };
        let info = plugin.describe().map_err(|e| format!("smoke call failed: {e}"))?;
        plugin.version = info.version;
        plugin.capabilities = info.capabilities;
        Ok(plugin)
    }

    fn instantiate(&self) -> Result<(Store<Sandbox>, wit::Adapter), PluginError> {
        let mut store = self.runtime.store();
        let instance = self.pre.instantiate(&mut store).map_err(|e| PluginError::Instantiate {
            plugin: self.name.clone(),
            detail: format!("{e:#}"),
        })?;
        Ok((store, instance))
    }

    fn call<R>(
        &self,
        f: impl FnOnce(&wit::Guest, &mut Store<Sandbox>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let (mut store, instance) = self.instantiate()?;
        f(instance.switchboard_plugin_provider(), &mut store)
            .map_err(|e| self.runtime.call_error(&self.name, &store, e))
    }

    pub fn describe(&self) -> Result<wit::AdapterInfo, PluginError> {
        self.call(|guest, store| guest.call_describe(store))
    }

    pub fn build_request(&self, request: &[u8], target: &wit::Target) -> Result<wit::OutboundRequest, PluginError> {
        self.call(|guest, store| guest.call_build_request(store, request, target))?
            .map_err(|reason| PluginError::Refused { plugin: self.name.clone(), reason })
    }

    /// The outer error is the plugin failing; the inner one the adapter's
    /// verdict that the provider's answer was malformed.
    pub fn parse_response(
        &self,
        response: &wit::InboundResponse,
        target: &wit::Target,
    ) -> Result<Result<wit::Completion, String>, PluginError> {
        let completion = self.call(|guest, store| guest.call_parse_response(store, response, target))?;
        if let Ok(completion) = &completion
            && serde_json::from_slice::<serde::de::IgnoredAny>(&completion.body).is_err()
        {
            return Err(PluginError::Contract {
                plugin: self.name.clone(),
                detail: "translated answer is not valid JSON".into(),
            });
        }
        Ok(completion)
    }

    pub fn classify_error(
        &self,
        response: &wit::InboundResponse,
        target: &wit::Target,
    ) -> Result<wit::ProviderError, PluginError> {
        self.call(|guest, store| guest.call_classify_error(store, response, target))
    }

    /// Start decoding one stream; the session keeps its own instance.
    pub fn open_stream(
        self: &Arc<Self>,
        target: &wit::Target,
        include_usage: bool,
    ) -> Result<StreamSession, PluginError> {
        let (mut store, instance) = self.instantiate()?;
        let decoder = instance
            .switchboard_plugin_provider()
            .stream_decoder()
            .call_constructor(&mut store, target, include_usage)
            .map_err(|e| self.runtime.call_error(&self.name, &store, e))?;
        Ok(StreamSession { store, instance, decoder, plugin: self.clone() })
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
    pub fn feed(&mut self, event: &wit::SseEvent) -> Result<Result<wit::Decoded, wit::ProviderError>, PluginError> {
        self.plugin.runtime.rearm(&mut self.store);
        let decoded = self
            .instance
            .switchboard_plugin_provider()
            .stream_decoder()
            .call_feed(&mut self.store, self.decoder, event)
            .map_err(|e| self.plugin.runtime.call_error(&self.plugin.name, &self.store, e))?;
        if let Ok(decoded) = &decoded
            && decoded.chunks.iter().any(|c| serde_json::from_slice::<serde::de::IgnoredAny>(c).is_err())
        {
            return Err(PluginError::Contract {
                plugin: self.plugin.name.clone(),
                detail: "stream chunk is not valid JSON".into(),
            });
        }
        Ok(decoded)
    }
}
