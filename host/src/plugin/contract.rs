//! Checks which version of the contract a component implements, so the
//! host binds it with the right bindings and refuses any other version with
//! a clear message.

use wasmtime::Engine;
use wasmtime::component::Component;

/// A contract version this host speaks (see `wit/switchboard.wit` and the
/// frozen `wit/v0.2/` and `wit/v0.1/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V0_1,
    V0_2,
    V0_3,
}

impl Version {
    const ALL: [(Version, (u64, u64)); 3] = [
        (Version::V0_1, (0, 1)),
        (Version::V0_2, (0, 2)),
        (Version::V0_3, (0, 3)),
    ];

    fn of(major: u64, minor: u64) -> Option<Version> {
        Version::ALL
            .iter()
            // Same major; for 0.x, also the same minor.
            .find(|(_, (want_major, want_minor))| major == *want_major && (major > 0 || minor == *want_minor))
            .map(|(version, _)| *version)
    }

    /// As shown to operators: `0.2`.
    pub fn label(self) -> &'static str {
        match self {
            Version::V0_1 => "0.1",
            Version::V0_2 => "0.2",
            Version::V0_3 => "0.3",
        }
    }
}

fn spoken() -> String {
    Version::ALL
        .iter()
        .map(|(_, (major, minor))| format!("switchboard:plugin@{major}.{minor}.x"))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Find the export `switchboard:plugin/<interface>@x.y.z` and tell which
/// version of the contract it is, if this host speaks it.
pub fn check(engine: &Engine, component: &Component, interface: &str) -> Result<Version, String> {
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
        return Version::of(major, minor).ok_or_else(|| {
            format!(
                "it was built for switchboard:plugin@{version}, but this host speaks {}; rebuild it against this host's wit/",
                spoken()
            )
        });
    }
    Err(format!(
        "it does not export `{prefix}` of {} (exports: {})",
        spoken(),
        if others.is_empty() {
            "none".to_string()
        } else {
            others.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_spoken_version_is_recognised_and_no_other() {
        assert_eq!(Version::of(0, 1), Some(Version::V0_1));
        assert_eq!(Version::of(0, 2), Some(Version::V0_2));
        assert_eq!(Version::of(0, 3), Some(Version::V0_3));
        assert_eq!(Version::of(0, 4), None);
        assert_eq!(Version::of(9, 0), None);
        assert_eq!(
            spoken(),
            "switchboard:plugin@0.1.x and switchboard:plugin@0.2.x and switchboard:plugin@0.3.x"
        );
    }
}
