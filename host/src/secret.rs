//! A credential that never prints: `Debug` and `Display` show a placeholder.

use subtle::ConstantTimeEq;

pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value, for the one place that sends it (the upstream request).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compare with a presented value in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
