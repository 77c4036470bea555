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

/// The checksum `check` after a 32-bit field of the summed data changed from `old` to `new`
/// (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
#[inline(always)]
pub fn replace_u32(check: u16, old: u32, new: u32) -> u16 {
    let words = |v: u32| [(v >> 16) as u16, v as u16];
    let mut acc = u64::from(!check);
    for (old, new) in words(old).into_iter().zip(words(new)) {
        acc += u64::from(!old) + u64::from(new);
    }
    finish(acc)
}
