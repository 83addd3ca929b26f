//! Typed calls into a routing policy component.

use super::PluginError;
use super::bulkhead::{Bulkhead, CallLimits};
use super::sandbox::{PluginRuntime, Sandbox};
use super::types::{Candidate, PlanStep, RequestFacts};
use super::v0_1::policy as wit;
use std::sync::Arc;

/// One loaded version of a policy, pre-instantiated.
pub struct PolicyPlugin {
    pub name: String,
    pub source: String,
    pub bulkhead: Bulkhead,
    pre: wit::PolicyPre<Sandbox>,
    runtime: Arc<PluginRuntime>,
}

impl PolicyPlugin {
    /// Compile, check the contract, pre-instantiate and smoke-call it.
    pub async fn load(
        runtime: &Arc<PluginRuntime>,
        name: &str,
        source: String,
        bytes: Vec<u8>,
        limits: CallLimits,
    ) -> Result<Self, String> {
        let pre = runtime.prepare(bytes, "router").await.and_then(|pre| {
            wit::PolicyPre::new(pre).map_err(|e| format!("it does not match the `router` interface: {e:#}"))
        })?;
        let plugin = PolicyPlugin {
            name: name.to_string(),
            bulkhead: Bulkhead::new(limits, source != "bundled"),
            source,
            pre,
            runtime: runtime.clone(),
        };
        // A policy must at least answer; whether it likes `{}` is its own business.
        match plugin.validate_config("{}").await {
            Ok(()) | Err(PluginError::Refused { .. }) => {}
            Err(e) => return Err(format!("smoke call failed: {e}")),
        }
        Ok(plugin)
    }

    async fn call<R>(
        &self,
        f: impl AsyncFnOnce(&wit::Guest, &mut wasmtime::Store<Sandbox>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let _place = self.bulkhead.enter(&self.name)?;
        let result = async {
            let mut store = self
                .runtime
                .store(self.bulkhead.limits().timeout, Some(self.bulkhead.slow_lane()));
            let instance = match self.pre.instantiate_async(&mut store).await {
                Ok(instance) => instance,
                Err(e) => return Err(self.runtime.instantiate_error(&self.name, &store, e)),
            };
            let result = f(instance.switchboard_plugin_router(), &mut store).await;
            result.map_err(|e| self.runtime.call_error(&self.name, &store, e))
        }
        .await;
        if self.bulkhead.record(&result) {
            tracing::error!(plugin = %self.name, source = %self.source, limit = self.bulkhead.limits().quarantine_after, "policy quarantined after repeated traps or timeouts; an earlier version serves if there is one, else its routes use the configured order");
        }
        result
    }

    pub async fn validate_config(&self, config: &str) -> Result<(), PluginError> {
        self.call(async |guest, store| guest.call_validate_config(store, config).await)
            .await?
            .map_err(|reason| PluginError::Refused {
                plugin: self.name.clone(),
                reason,
            })
    }

    /// Ask for a plan; every attempt must name one of the candidates.
    pub async fn plan(
        &self,
        facts: &RequestFacts,
        candidates: &[Candidate],
        config: &str,
    ) -> Result<Vec<PlanStep>, PluginError> {
        let facts = wit::RequestFacts::from(facts);
        let offered: Vec<wit::Candidate> = candidates.iter().map(Into::into).collect();
        let plan = self
            .call(async |guest, store| guest.call_plan(store, &facts, &offered, config).await)
            .await?
            .map_err(|reason| PluginError::Refused {
                plugin: self.name.clone(),
                reason,
            })?;
        if let Some(bad) = plan
            .iter()
            .find(|a| !candidates.iter().any(|c| c.index == a.candidate))
        {
            return Err(PluginError::Contract {
                plugin: self.name.clone(),
                detail: format!("plan names candidate {} which was not offered", bad.candidate),
            });
        }
        Ok(plan.into_iter().map(Into::into).collect())
    }
}
