//! Byte strings read eight bytes at a time, for the per-request scans of
//! header names (underscores in `decision_headers`, case-blind matches in
//! `listen::wire_head`).

/// One in every byte of a word.
pub const ONES: u64 = 0x0101_0101_0101_0101;

/// Eight bytes as one word, little-endian (the slice is exactly eight long).
#[inline]
pub fn word(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

/// Fewer than eight bytes as one word, little-endian, zeros after them
/// (gathered byte by byte: copying them into a padded word calls `memcpy`).
#[inline]
pub fn short_word(bytes: &[u8]) -> u64 {
    bytes.iter().rev().fold(0, |word, byte| (word << 8) | u64::from(*byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_the_bytes_in_order() {
        assert_eq!(word(b"abcdefgh"), u64::from_le_bytes(*b"abcdefgh"));
        assert_eq!(short_word(b"abc"), u64::from_le_bytes(*b"abc\0\0\0\0\0"));
        assert_eq!(short_word(b""), 0);
    }
}
