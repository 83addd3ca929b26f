//! End-to-end tests: the real `switchboard` binary with real Wasm plugins,
//! against mock providers on loopback. One binary, a module per area.

mod accounts;
mod anthropic;
mod bulkheads;
mod classes;
mod clients;
mod compat;
mod connections;
mod contract;
mod embeddings;
mod failover;
mod first_hour;
mod gemini;
mod health;
mod input;
mod ledger;
mod messages;
mod plugins;
mod policies;
mod proxy;
mod reload;
mod responses;
mod resume;
mod sdk;
mod secrets;
mod support;
mod tls;
