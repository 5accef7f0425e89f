//! Random identifiers for requests, traces and spans, made without a lock or a syscall.
//!
//! Each thread runs a SplitMix64 sequence from a random starting point (taken once from the
//! operating system's generator through `rand`): consecutive outputs of one thread never repeat
//! within 2^64 draws, and two threads' sequences collide with negligible probability. These are
//! identifiers, not secrets; nothing here is meant to be unguessable.

use std::cell::Cell;

use rand::Rng;

thread_local! {
    static STATE: Cell<u64> = Cell::new(rand::rng().random());
}

/// The next 64 random bits of this thread's sequence.
pub fn next_u64() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// A random non-zero 64-bit id.
pub fn nonzero_u64() -> u64 {
    loop {
        let v = next_u64();
        if v != 0 {
            return v;
        }
    }
}

/// A random non-zero 128-bit id.
pub fn nonzero_u128() -> u128 {
    (u128::from(next_u64()) << 64) | u128::from(nonzero_u64())
}

/// Writes `v` as lowercase hex, zero-padded to fill `out` (its low `4 × out.len()` bits).
pub fn write_hex(out: &mut [u8], mut v: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_zero_padded_lowercase() {
        let mut out = [0u8; 8];
        write_hex(&mut out, 0xab_cdef);
        assert_eq!(&out, b"00abcdef");
        let mut out = [0u8; 32];
        write_hex(&mut out, u128::MAX);
        assert_eq!(out, [b'f'; 32]);
    }

    #[test]
    fn ids_do_not_repeat_and_use_all_bits() {
        let ids: std::collections::HashSet<u64> = (0..100_000).map(|_| nonzero_u64()).collect();
        assert_eq!(ids.len(), 100_000);
        let (mut ones, mut zeros) = (0u64, 0u64);
        for id in ids.iter().take(1000) {
            ones |= id;
            zeros |= !id;
        }
        assert_eq!((ones, zeros), (u64::MAX, u64::MAX), "every bit takes both values");
    }
}
