//! The names a record refers to (providers, models, routes, `provider/model`
//! labels), each kept once for the life of the process: a configuration
//! interns its own when it is loaded, and every request's record points at
//! them instead of carrying copies (which were made on the request path and
//! freed on the ledger's writer). Bounded by the names configurations ever
//! held.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// `name`, kept once.
pub fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock().unwrap();
    if let Some(known) = names.get(name) {
        return known;
    }
    let kept: &'static str = Box::leak(name.into());
    names.insert(kept);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_kept_once() {
        let first = intern("openai/gpt-4o");
        let again = intern(&String::from("openai/gpt-4o"));
        assert!(std::ptr::eq(first, again));
        assert_ne!(intern("openai/gpt-4o-mini"), first);
    }
}
