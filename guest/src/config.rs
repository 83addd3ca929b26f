//! A plugin's configuration (an adapter's options, a policy's config) comes
//! as JSON text with every call, the same text on every request. Parsing it
//! each time was a share of a plugin call worth keeping; [`LastParsed`]
//! keeps the last text's result.

use std::cell::RefCell;
use std::rc::Rc;

/// The last configuration text parsed, and what it parsed to. What it keeps
/// depends on that text alone, so an instance the host reuses (a stateless
/// plugin's) carries nothing from one request to the next. Declare one per
/// configuration type:
///
/// ```
/// use switchboard_guest::config::LastParsed;
/// struct Options(String);
/// fn parse(text: &str) -> Result<Options, String> {
///     Ok(Options(text.to_string()))
/// }
/// thread_local! {
///     static OPTIONS: LastParsed<Options> = const { LastParsed::new() };
/// }
/// let options = OPTIONS.with(|last| last.parse(r#"{"a":1}"#, parse)).unwrap();
/// assert_eq!(options.0, r#"{"a":1}"#);
/// ```
pub struct LastParsed<T>(RefCell<Option<(String, Rc<T>)>>);

impl<T> LastParsed<T> {
    pub const fn new() -> Self {
        LastParsed(RefCell::new(None))
    }

    /// `parse(text)`, or its result for the same text last time. A text
    /// `parse` refuses is refused every time, and replaces nothing.
    pub fn parse(&self, text: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<Rc<T>, String> {
        if let Some((last, parsed)) = &*self.0.borrow()
            && last == text
        {
            return Ok(parsed.clone());
        }
        let parsed = Rc::new(parse(text)?);
        *self.0.borrow_mut() = Some((text.to_string(), parsed.clone()));
        Ok(parsed)
    }
}

impl<T> Default for LastParsed<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_parsed_again_only_when_it_changes() {
        let last = LastParsed::new();
        let calls = std::cell::Cell::new(0);
        let parse = |text: &str| {
            calls.set(calls.get() + 1);
            text.parse::<u32>().map_err(|e| e.to_string())
        };
        let first = last.parse("7", parse).unwrap();
        let again = last.parse("7", parse).unwrap();
        assert!(Rc::ptr_eq(&first, &again));
        assert_eq!(calls.get(), 1);
        assert_eq!(*last.parse("8", parse).unwrap(), 8);
        assert!(last.parse("x", parse).is_err());
        assert!(last.parse("x", parse).is_err());
        assert_eq!(calls.get(), 4, "a refused text is tried again");
        assert_eq!(*last.parse("8", parse).unwrap(), 8);
        assert_eq!(calls.get(), 4, "and replaced nothing");
    }
}
