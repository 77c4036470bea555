//! Zeroed stack buffers without `memset`. LLVM turns `[0u8; N]` and zero-filled structs into a
//! call of compiler_builtins' `memset`, which in BPF is a byte loop: on live traffic that loop
//! was ~4% of the server CPU of a SYN flood (perf: `bpf_prog_*_memset`, about 125 ns per SYN
//! for the SYN-ACK's buffers). Here the zeros are 8-byte volatile stores, which LLVM cannot
//! merge back into a `memset` call.
use core::mem::{MaybeUninit, align_of, size_of};

/// A byte buffer that [`bytes`] can zero: 8-byte aligned (BPF stack stores must be aligned)
/// and a whole number of words.
#[repr(C, align(8))]
pub struct Words<const N: usize>([u8; N]);

/// Zeroes `slot` and returns it as bytes.
#[inline(always)]
pub fn bytes<const N: usize>(slot: &mut MaybeUninit<Words<N>>) -> &mut [u8; N] {
    // SAFETY: any bytes are a valid byte array.
    &mut unsafe { zeroed(slot) }.0
}

/// Zeroes `slot` and returns it.
///
/// # Safety
/// All-zero bytes must be a valid `T`.
#[inline(always)]
pub unsafe fn zeroed<T>(slot: &mut MaybeUninit<T>) -> &mut T {
    const { assert!(align_of::<T>() >= 8 && size_of::<T>().is_multiple_of(8)) };
    let words = slot.as_mut_ptr() as *mut u64;
    // An indexed loop: the verifier follows it unrolled.
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: `i` words into `slot`, which is aligned and sized for them.
        unsafe { words.add(i).write_volatile(0) };
    }
    // SAFETY: every byte is written; the caller vouches for all-zero being a `T`.
    unsafe { slot.assume_init_mut() }
}
