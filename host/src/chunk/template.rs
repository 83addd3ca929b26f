//! A stream's chunks differ from one another mostly inside strings: the
//! text of a delta, OpenAI's `obfuscation` padding, now and then an id.
//! A chunk that has the bytes of one read whole everywhere but inside its
//! string values (never a member's name) is that chunk with other strings
//! in it: the same members, numbers and literals, so the same verdict.
//! Only its changed strings are read (checked as strings, escapes and all),
//! and what the view takes from strings (the id, the text) is taken from
//! the new chunk.

use super::ChunkView;
use switchboard_guest::scan::{Scanner, Span, Str};

/// A chunk read whole, to read the next ones by.
pub struct Template {
    pub(super) text: String,
    /// Where its string values' opening and closing quotes are, in order.
    pub(super) values: Vec<(usize, usize)>,
    /// The values the view took (`values` positions, ascending), where
    /// they are, and what for.
    taken: Vec<(usize, Span, Taken)>,
    /// What the chunk said besides its strings (the tests change it, to
    /// see the template used).
    pub(super) finished: bool,
    usage: bool,
    unresumable: Option<&'static str>,
}

#[derive(Clone, Copy)]
enum Taken {
    Id,
    Text,
}

impl Template {
    /// The template of `text`, which `view` read whole. None when one of
    /// its strings is not one a template reads (an unpaired surrogate,
    /// which a skipped value may hold): such chunks are read whole.
    pub fn of(text: &str, view: &ChunkView) -> Option<Template> {
        let bytes = text.as_bytes();
        let mut values = Vec::new();
        let mut at = 0;
        // Valid JSON: every quote outside a string opens one.
        while let Some(quote) = memchr::memchr(b'"', &bytes[at..]) {
            let string = Str::at(text, at + quote)?;
            let (open, close) = (at + quote, at + quote + string.written_len() - 1);
            let after = bytes[close + 1..].iter().find(|b| !b.is_ascii_whitespace());
            if after != Some(&b':') {
                values.push((open, close));
            }
            at = close + 1;
        }
        let scanner = Scanner::new(text);
        let value = |string: Str, what: Taken| {
            let span = scanner.span(string);
            let at = values
                .binary_search_by_key(&span.start(), |&(open, _)| open)
                .ok()?;
            Some((at, span, what))
        };
        let texts = view.text.iter().chain(&view.more_text);
        let mut taken: Vec<(usize, Span, Taken)> = (view.id.map(|id| value(id, Taken::Id)).into_iter())
            .chain(texts.map(|&text| value(text, Taken::Text)))
            .collect::<Option<_>>()?;
        // The id comes first in the view whatever its place in the chunk;
        // the text keeps its order.
        taken.sort_by_key(|&(at, _, _)| at);
        Some(Template {
            text: text.to_string(),
            values,
            taken,
            finished: view.finished,
            usage: view.usage,
            unresumable: view.unresumable,
        })
    }

    /// What a chunk says, when it has this template's bytes but inside
    /// string values, and strings there; else none (read it whole).
    pub fn read<'a>(&self, text: &'a str) -> Option<ChunkView<'a>> {
        let (old, new) = (self.text.as_bytes(), text.as_bytes());
        let mut view = ChunkView {
            finished: self.finished,
            usage: self.usage,
            unresumable: self.unresumable,
            ..ChunkView::default()
        };
        let scanner = Scanner::new(text);
        let mut taken = self.taken.iter().peekable();
        // How far both are alike, and the first value not yet passed.
        let (mut at_old, mut at_new, mut value) = (0, 0, 0);
        loop {
            let same = same_bytes(&old[at_old..], &new[at_new..]);
            let differ = at_old + same;
            if differ == old.len() && at_new + same == new.len() {
                break;
            }
            // Where they differ must be inside a string value, past its
            // opening quote (so that the quote is where it was).
            value += self.values[value..].partition_point(|&(_, close)| close < differ);
            let &(open, close) = self.values.get(value)?;
            if open >= differ {
                return None;
            }
            let open_new = open - at_old + at_new;
            let string = Str::at(text, open_new)?;
            // The values taken before it are the same bytes, shifted.
            while let Some(&&(earlier, span, what)) = taken.peek()
                && earlier <= value
            {
                let moved = span.moved_to(span.start() - at_old + at_new);
                view.take(
                    what,
                    if earlier == value {
                        string
                    } else {
                        scanner.string_at(moved)
                    },
                );
                taken.next();
            }
            (at_old, at_new, value) = (close + 1, open_new + string.written_len(), value + 1);
        }
        for &(_, span, what) in taken {
            view.take(
                what,
                scanner.string_at(span.moved_to(span.start() - at_old + at_new)),
            );
        }
        Some(view)
    }
}

impl<'a> ChunkView<'a> {
    fn take(&mut self, what: Taken, string: Str<'a>) {
        match what {
            Taken::Id => self.id = Some(string),
            Taken::Text => self.push_text(string),
        }
    }
}

/// How many bytes the two begin with alike, compared eight at a time.
fn same_bytes(a: &[u8], b: &[u8]) -> usize {
    let len = a.len().min(b.len());
    let mut at = 0;
    while let (Some(x), Some(y)) = (a.get(at..at + 8), b.get(at..at + 8)) {
        let differ = u64::from_le_bytes(x.try_into().expect("eight bytes"))
            ^ u64::from_le_bytes(y.try_into().expect("eight bytes"));
        if differ != 0 {
            return at + differ.trailing_zeros() as usize / 8;
        }
        at += 8;
    }
    at + a[at..len]
        .iter()
        .zip(&b[at..len])
        .take_while(|(x, y)| x == y)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alike_bytes_are_counted_to_the_first_that_differs() {
        let a = b"0123456789abcdefghij";
        for cut in 0..=a.len() {
            let mut b = a.to_vec();
            if cut < b.len() {
                b[cut] = b'#';
            }
            assert_eq!(same_bytes(a, &b), cut);
            assert_eq!(same_bytes(&a[..cut], a), cut);
        }
    }
}
