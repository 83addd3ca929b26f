//! Switchboard: a multi-provider LLM gateway whose provider adapters and
//! routing policies are sandboxed WebAssembly components.

pub mod access;
pub mod api;
pub mod app;
pub mod chunk;
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
pub mod logfmt;
pub mod metrics;
pub mod plugin;
pub mod redact;
pub mod reload;
pub mod secret;
pub mod server;
pub mod simulator;
pub mod sse;
pub mod translate;
pub mod upstream;

/// The build script's message for a missing Wasm target, tested here.
#[cfg(test)]
#[path = "../build_support.rs"]
mod build_support;

#[cfg(test)]
mod build_tests {
    #[test]
    fn a_missing_wasm_target_is_one_line_naming_the_command() {
        let rustc = "error[E0463]: can't find crate for `core`\n  = note: the `wasm32-wasip2` target may not be installed\n  = help: consider downloading the target with `rustup target add wasm32-wasip2`";
        let message = super::build_support::missing_target_message(rustc).unwrap();
        assert!(!message.contains('\n'));
        assert!(message.contains("rustup target add wasm32-wasip2"));
        assert_eq!(
            super::build_support::missing_target_message("error: linker failed"),
            None
        );
    }
}
