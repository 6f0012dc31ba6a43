//! The properties the fuzz targets check, one module per target, each with a
//! `check(data, meter)` that panics when a property fails. The fuzz targets
//! call them on libFuzzer's inputs; `tests/fuzz_regressions.rs` in the main
//! crate includes this directory and replays the inputs that once failed, so
//! `cargo test` guards them without cargo-fuzz.
//!
//! Only `slotgate`, `bytes` and `redis-protocol` are used here: the main
//! crate's tests have those and nothing fuzz-specific.

pub mod differential;
pub mod reply_scanner;
pub mod request_parser;
pub mod resp3;

/// Runs the closure and returns the most bytes it had allocated at once.
/// The fuzz targets measure with a counting allocator; the test suite,
/// which may not use `unsafe`, passes [`unmetered`].
pub type Meter = fn(&mut dyn FnMut()) -> usize;

/// A target's check: panics when a property fails on the input.
pub type Check = fn(&[u8], Meter);

/// A [`Meter`] that measures nothing.
pub fn unmetered(f: &mut dyn FnMut()) -> usize {
    f();
    0
}

/// A fuzz input read as a few choices, then the payload. Reading past the
/// end gives zeros, so every input means something.
pub struct Choices<'a> {
    data: &'a [u8],
}

impl<'a> Choices<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Choices { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub fn u64(&mut self) -> u64 {
        let mut bytes = [0; 8];
        bytes.iter_mut().for_each(|b| *b = self.byte());
        u64::from_le_bytes(bytes)
    }

    /// A number in `0..n` (`n` at most 65536; 0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { usize::from(self.u16()) % n }
    }

    /// Up to `max` bytes of the input (a length byte, then the bytes).
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = (usize::from(self.byte()) % (max + 1)).min(self.data.len());
        let (taken, rest) = self.data.split_at(n);
        self.data = rest;
        taken
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Everything not read yet.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// The three ways every parser check feeds its input: in one piece, split
/// once at `cut`, and in pieces of `chunk` bytes (1 is the slowloris). Each
/// is the list of offsets at which the input so far is handed over.
pub fn deliveries(len: usize, cut: usize, chunk: usize) -> [Vec<usize>; 3] {
    let chunk = chunk.max(1);
    [vec![len], vec![cut % (len + 1), len], (chunk..len).step_by(chunk).chain([len]).collect()]
}
