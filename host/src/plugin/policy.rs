//! Typed calls into a routing policy component, whichever contract version
//! it was built for.

use super::PluginError;
use super::bulkhead::{Bulkhead, CallLimits};
use super::contract::Version;
use super::convert::{instantiate_pre, on_0_2_or_0_3, on_every_version};
use super::pool::{self, InstancePool};
use super::sandbox::{PluginRuntime, Sandbox};
use super::types::{Candidate, HedgeChoice, Plan, PolicyInfo, RequestFacts};
use super::{v0_1, v0_2, v0_3};
use std::sync::Arc;
use std::time::Duration;

/// One loaded version of a policy, pre-instantiated. Each call gets a fresh
/// instance, or, when the policy declares itself stateless, one kept from
/// an earlier call that returned normally.
pub struct PolicyPlugin {
    pub name: String,
    pub source: String,
    pub bulkhead: Bulkhead,
    /// What `describe` said (a 0.1 policy says nothing).
    pub info: PolicyInfo,
    pub contract: Version,
    pre: Pre,
    runtime: Arc<PluginRuntime>,
    /// Instances kept for the next calls (none unless the policy is stateless).
    pool: Arc<InstancePool<Instance>>,
}

enum Pre {
    V0_1(v0_1::policy::PolicyPre<Sandbox>),
    V0_2(v0_2::policy::PolicyPre<Sandbox>),
    V0_3(v0_3::policy::PolicyPre<Sandbox>),
}

enum Instance {
    V0_1(v0_1::policy::Policy),
    V0_2(v0_2::policy::Policy),
    V0_3(v0_3::policy::Policy),
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
        let (pre, contract) = runtime.prepare(bytes, "router").await?;
        let mismatch = |e: wasmtime::Error| format!("it does not match the `router` interface: {e:#}");
        let pre = match contract {
            Version::V0_1 => Pre::V0_1(v0_1::policy::PolicyPre::new(pre).map_err(mismatch)?),
            Version::V0_2 => Pre::V0_2(v0_2::policy::PolicyPre::new(pre).map_err(mismatch)?),
            Version::V0_3 => Pre::V0_3(v0_3::policy::PolicyPre::new(pre).map_err(mismatch)?),
        };
        let mut plugin = PolicyPlugin {
            name: name.to_string(),
            bulkhead: Bulkhead::new(limits, source != "bundled"),
            source,
            info: PolicyInfo::default(),
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
        // A policy must at least answer; whether it likes `{}` is its own business.
        match plugin.validate_config("{}").await {
            Ok(()) | Err(PluginError::Refused { .. }) => {}
            Err(e) => return Err(format!("smoke call failed: {e}")),
        }
        Ok(plugin)
    }

    async fn call<R>(
        &self,
        f: impl AsyncFnOnce(&Instance, &mut wasmtime::Store<Sandbox>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let _place = self.bulkhead.enter(&self.name)?;
        let result = async {
            let deadline = self.bulkhead.limits().timeout;
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
        if self.bulkhead.record(&result) {
            tracing::error!(plugin = %self.name, source = %self.source, limit = self.bulkhead.limits().quarantine_after, "policy quarantined after repeated traps or timeouts; an earlier version serves if there is one, else its routes use the configured order");
        }
        result
    }

    /// A fresh instance with the call deadline armed.
    async fn instantiate(
        &self,
        deadline: Duration,
    ) -> Result<(wasmtime::Store<Sandbox>, Instance), PluginError> {
        let make = |mut store: wasmtime::Store<Sandbox>| async move {
            let instance = instantiate_pre!(&self.pre, &mut store);
            (store, instance)
        };
        let store = || self.runtime.store(deadline, Some(self.bulkhead.slow_lane()));
        self.runtime.instantiate(&self.name, store, make).await
    }

    /// Calls served by a kept instance, and instances kept now.
    pub fn reuse(&self) -> (u64, usize) {
        (self.pool.reused(), self.pool.idle())
    }

    fn refused(&self, reason: String) -> PluginError {
        PluginError::Refused {
            plugin: self.name.clone(),
            reason,
        }
    }

    /// What the policy says of itself; a 0.1 policy has no `describe`.
    async fn describe(&self) -> Result<PolicyInfo, PluginError> {
        self.call(async |instance, store| {
            on_0_2_or_0_3!(instance, |i| i
                .switchboard_plugin_router()
                .call_describe(store)
                .await
                .map(Into::into),
            Instance::V0_1(_) => Ok(PolicyInfo::default()))
        })
        .await
    }

    pub async fn validate_config(&self, config: &str) -> Result<(), PluginError> {
        self.call(async |instance, store| {
            on_every_version!(instance, |i| i
                .switchboard_plugin_router()
                .call_validate_config(store, config)
                .await)
        })
        .await?
        .map_err(|reason| self.refused(reason))
    }

    /// Ask for a plan; every attempt must name one of the candidates.
    pub async fn plan(
        &self,
        facts: &RequestFacts,
        candidates: &[Candidate],
        config: &str,
    ) -> Result<Plan, PluginError> {
        let plan = self
            .call(async |instance, store| {
                on_0_2_or_0_3!(instance, |v, i| {
                    let facts = v::policy::RequestFacts::from(facts);
                    let offered: Vec<v::policy::Candidate> = candidates.iter().map(Into::into).collect();
                    let plan = i
                        .switchboard_plugin_router()
                        .call_plan(store, &facts, &offered, config)
                        .await?;
                    Ok(plan.map(Plan::from))
                },
                Instance::V0_1(i) => {
                    let facts = v0_1::policy::RequestFacts::from(facts);
                    let offered: Vec<v0_1::policy::Candidate> = candidates.iter().map(Into::into).collect();
                    let plan = i
                        .switchboard_plugin_router()
                        .call_plan(store, &facts, &offered, config)
                        .await?;
                    Ok(plan.map(|attempts| Plan {
                        steps: attempts.into_iter().map(Into::into).collect(),
                        hedge: HedgeChoice::Route,
                    }))
                })
            })
            .await?
            .map_err(|reason| self.refused(reason))?;
        if let Some(bad) = plan
            .steps
            .iter()
            .find(|a| !candidates.iter().any(|c| c.index == a.candidate))
        {
            return Err(PluginError::Contract {
                plugin: self.name.clone(),
                detail: format!("plan names candidate {} which was not offered", bad.candidate),
            });
        }
        Ok(plan)
    }
}
