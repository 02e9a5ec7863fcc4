//! The byte format the stateful targets read their operations from, and its writer for seeds.
//!
//! Every read succeeds: past the end of the input, numbers read as zero and byte strings as empty,
//! so any byte string is a valid (if short) script and the fuzzer never wastes an input on a
//! decoding error. All integers are big-endian.

/// Reads fields front to back from the fuzzer's input.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    /// Starts reading at the beginning of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Takes up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = tail;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let head = self.bytes(N);
        out[..head.len()].copy_from_slice(head);
        out
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> u8 {
        let [b] = self.array();
        b
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }

    /// Reads a big-endian `i16`.
    pub fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.array())
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }

    /// Reads a byte string with a `u16` length in front, at most `max` bytes long.
    pub fn chunk(&mut self, max: usize) -> &'a [u8] {
        let len = usize::from(self.u16()).min(max);
        self.bytes(len)
    }
}

/// Writes fields in the format [`Input`] reads, for seed inputs.
#[derive(Debug, Clone, Default)]
pub struct Script {
    bytes: Vec<u8>,
}

impl Script {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Writes one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }

    /// Writes a big-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Writes a big-endian `i16`.
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Writes a big-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Writes a byte string with its `u16` length in front.
    ///
    /// # Panics
    /// If `v` is longer than `u16::MAX` bytes (seeds are small).
    pub fn chunk(&mut self, v: &[u8]) -> &mut Self {
        let len = u16::try_from(v.len()).expect("seed chunk longer than u16::MAX");
        self.u16(len);
        self.bytes.extend_from_slice(v);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_script_wrote_then_zeroes() {
        let mut s = Script::new();
        s.u8(7).u16(0x0102).i16(-2).u32(9).chunk(b"abc");
        let bytes = s.into_bytes();
        let mut r = Input::new(&bytes);
        assert_eq!(r.u8(), 7);
        assert_eq!(r.u16(), 0x0102);
        assert_eq!(r.i16(), -2);
        assert_eq!(r.u32(), 9);
        assert_eq!(r.chunk(100), b"abc");
        assert!(r.is_empty());
        assert_eq!(r.u32(), 0);
        assert_eq!(r.chunk(100), b"");
    }

    #[test]
    fn a_short_read_fills_with_zeroes_and_chunks_are_capped() {
        let mut r = Input::new(&[0x12]);
        assert_eq!(r.u16(), 0x1200);
        let mut r = Input::new(&[0, 5, 1, 2, 3, 4, 5]);
        assert_eq!(r.chunk(2), &[1, 2]);
        assert_eq!(r.u8(), 3);
    }
}
