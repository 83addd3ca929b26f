//! Checks that a component implements this host's version of the contract,
//! so a plugin built for another version is refused with a clear message.

use wasmtime::Engine;
use wasmtime::component::Component;

/// The WIT package version this host speaks (see `wit/switchboard.wit`).
pub const CONTRACT_VERSION: (u64, u64) = (0, 1);

/// Find the export `switchboard:plugin/<interface>@x.y.z` and check that its
/// version is compatible (same major; for 0.x, same minor).
pub fn check(engine: &Engine, component: &Component, interface: &str) -> Result<(), String> {
    let prefix = format!("switchboard:plugin/{interface}");
    let ty = component.component_type();
    let mut others = Vec::new();
    for (name, _) in ty.exports(engine) {
        let Some(rest) = name.strip_prefix(&prefix) else {
            others.push(name.to_string());
            continue;
        };
        let version = rest.strip_prefix('@').unwrap_or("");
        let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
        let (major, minor) = match (parts.next().flatten(), parts.next().flatten()) {
            (Some(major), Some(minor)) => (major, minor),
            _ => return Err(format!("it exports `{name}` without a usable version")),
        };
        let (want_major, want_minor) = CONTRACT_VERSION;
        let compatible = major == want_major && (major > 0 || minor == want_minor);
        return if compatible {
            Ok(())
        } else {
            Err(format!(
                "it was built for switchboard:plugin@{version}, but this host speaks switchboard:plugin@{want_major}.{want_minor}.x; rebuild it against this host's wit/"
            ))
        };
    }
    Err(format!(
        "it does not export `{prefix}@{}.{}.x` (exports: {})",
        CONTRACT_VERSION.0,
        CONTRACT_VERSION.1,
        if others.is_empty() {
            "none".to_string()
        } else {
            others.join(", ")
        }
    ))
}
