//! Internet checksum (RFC 1071) over byte buffers on the stack.

/// Adds `bytes` as big-endian 16-bit words to a ones' complement accumulator.
#[inline(always)]
pub fn add(acc: u64, bytes: &[u8]) -> u64 {
    let mut acc = acc;
    for word in bytes.chunks_exact(2) {
        acc += u64::from(u16::from_be_bytes([word[0], word[1]]));
    }
    acc
}

/// Folds the accumulator to 16 bits and complements it: the value to store in the header.
#[inline(always)]
pub fn finish(acc: u64) -> u16 {
    let mut acc = acc;
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}
