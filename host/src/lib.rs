//! Switchboard: a multi-provider LLM gateway whose provider adapters and
//! routing policies are sandboxed WebAssembly components.

pub mod access;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod cost;
pub mod facts;
pub mod flow;
pub mod fswatch;
pub mod gateway;
pub mod health;
pub mod ledger;
pub mod lifecycle;
pub mod metrics;
pub mod plugin;
pub mod redact;
pub mod reload;
pub mod secret;
pub mod server;
pub mod simulator;
pub mod sse;
pub mod upstream;
