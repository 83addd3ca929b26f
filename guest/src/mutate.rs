//! Mutated texts for differential tests (feature `test-support`): a reader
//! checked against another on seeds changed a little, reproducibly.

/// A fixed xorshift, so a failing case reproduces, and the changes it
/// makes to a text.
pub struct Mutator {
    state: u64,
    /// The bytes a change puts in.
    bytes: &'static [u8],
    /// Whether a change may also cut the text short.
    truncates: bool,
}

impl Mutator {
    pub fn new(seed: u64, bytes: &'static [u8], truncates: bool) -> Mutator {
        Mutator {
            state: seed,
            bytes,
            truncates,
        }
    }

    /// A number below `bound`.
    pub fn below(&mut self, bound: usize) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state % bound as u64) as usize
    }

    /// One change at a place: a byte removed, replaced or put in, a span
    /// of up to 11 bytes repeated, or (when it truncates) the rest cut.
    pub fn change(&mut self, data: &mut Vec<u8>) {
        let at = self.below(data.len() + 1);
        match self.below(if self.truncates { 5 } else { 4 }) {
            0 if at < data.len() => {
                data.remove(at);
            }
            1 if at < data.len() => data[at] = self.byte(),
            2 => {
                let byte = self.byte();
                data.insert(at, byte);
            }
            3 => self.repeat(data, at),
            _ if self.truncates => data.truncate(at),
            _ => self.repeat(data, at),
        }
    }

    /// `rounds` texts: each seed as it is, then the seeds in turn with one
    /// to three changes each.
    pub fn texts<'a>(&'a mut self, seeds: &'a [&str], rounds: usize) -> impl Iterator<Item = Vec<u8>> + 'a {
        (0..rounds).map(move |round| {
            let mut text = seeds[round % seeds.len()].as_bytes().to_vec();
            if round >= seeds.len() {
                for _ in 0..1 + self.below(3) {
                    self.change(&mut text);
                }
            }
            text
        })
    }

    fn byte(&mut self) -> u8 {
        self.bytes[self.below(self.bytes.len())]
    }

    fn repeat(&mut self, data: &mut Vec<u8>, at: usize) {
        let end = (at + self.below(12)).min(data.len());
        let span = data[at..end].to_vec();
        data.splice(at..at, span);
    }
}
