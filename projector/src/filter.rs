//! Which keys may exist: a scalable blocked Bloom filter over every key a worker's tenants have
//! in the `state`, `seen` and view column families, so that a read of a key that cannot exist
//! (a new event id, a new evidence item, the facts of a finding nothing named yet) never goes
//! to RocksDB. A "no" is exact; a "maybe" (about 1 % false positives) is decided by the read,
//! as before.
//!
//! Exactness rests on one invariant: every key written to those column families is added
//! (`Overlay::drain_writes`) before the write can be read back, and every stored key is added
//! at start (`Engine::with_workers` scans them). Nothing is ever removed: a deleted key's bits
//! only cost a read. Keys are hashed with a per-process seed, so input cannot be crafted to
//! collide.
//!
//! Layout: 64-byte blocks; a key picks one block and sets `PROBES` bits in it (one cache
//! line per lookup). When a layer holds its capacity, a new layer twice as large is added; a
//! lookup asks every layer (a few after millions of keys).
//!
//! A key the filter already answers "maybe" for is not inserted again: most writes rewrite a
//! key that exists (an agent's aggregate, a finding's row, every batch), and counting each
//! rewrite as a new key had grown the filter with the writes rather than with the keys. Not
//! inserting a false positive keeps the invariant: it already answers "maybe".
//! [`total_bytes`] is what every filter of the process holds (the projector's
//! `state_memory_bytes{part="key_filter"}`).

use std::hash::BuildHasher;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of the bit arrays of every filter alive in this process.
static BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes of the bit arrays of every filter alive in this process (the metrics' gauge).
pub(crate) fn total_bytes() -> usize {
    BYTES.load(Ordering::Relaxed)
}

/// Bits set per key within its block.
const PROBES: u32 = 7;
/// Bits per key a layer is sized for (with 7 probes in 512-bit blocks: about 1 % false
/// positives when full).
const BITS_PER_KEY: usize = 10;
/// The first layer's capacity in keys.
const FIRST_LAYER: usize = 1 << 18;

static SEED: LazyLock<foldhash::quality::RandomState> = LazyLock::new(Default::default);

/// A key's hash: column family byte and key bytes.
fn hash(cf: u8, key: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = SEED.build_hasher();
    h.write_u8(cf);
    h.write(key);
    h.finish()
}

#[derive(Debug)]
struct Layer {
    blocks: Vec<[u64; 8]>,
    keys: usize,
    capacity: usize,
}

impl Layer {
    fn new(capacity: usize) -> Self {
        let blocks = (capacity * BITS_PER_KEY).div_ceil(512).max(1);
        BYTES.fetch_add(blocks * 64, Ordering::Relaxed);
        Layer {
            blocks: vec![[0; 8]; blocks],
            keys: 0,
            capacity,
        }
    }

    /// The block and the bit positions of a hash.
    fn probes(&self, h: u64) -> (usize, impl Iterator<Item = u32> + use<>) {
        let block = ((h >> 32).wrapping_mul(self.blocks.len() as u64) >> 32) as usize;
        let mut x = h as u32;
        let step = (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32 | 1;
        let bits = (0..PROBES).map(move |_| {
            x = x.wrapping_add(step);
            x >> 23 // 9 bits: 0..512
        });
        (block, bits)
    }

    fn insert(&mut self, h: u64) {
        let (b, bits) = self.probes(h);
        let block = &mut self.blocks[b];
        for bit in bits {
            block[(bit >> 6) as usize] |= 1 << (bit & 63);
        }
        self.keys += 1;
    }

    fn contains(&self, h: u64) -> bool {
        let (b, mut bits) = self.probes(h);
        let block = &self.blocks[b];
        bits.all(|bit| block[(bit >> 6) as usize] & (1 << (bit & 63)) != 0)
    }
}

impl Drop for Layer {
    fn drop(&mut self) {
        BYTES.fetch_sub(self.blocks.len() * 64, Ordering::Relaxed);
    }
}

/// Keys that may exist (see the module docs).
#[derive(Debug)]
pub(crate) struct MayExist {
    layers: Vec<Layer>,
}

impl Default for MayExist {
    fn default() -> Self {
        MayExist::with_capacity(FIRST_LAYER)
    }
}

impl MayExist {
    /// A filter whose first layer holds `keys` keys at the designed false-positive rate.
    pub(crate) fn with_capacity(keys: usize) -> Self {
        MayExist {
            layers: vec![Layer::new(keys.max(1024))],
        }
    }

    /// Records that `key` of column family `cf` may exist from now on (nothing to do when it
    /// already may).
    pub(crate) fn insert(&mut self, cf: u8, key: &[u8]) {
        let h = hash(cf, key);
        if self.layers.iter().any(|l| l.contains(h)) {
            return;
        }
        let last = self.layers.last().map_or(0, |l| l.capacity);
        if self.layers.last().is_none_or(|l| l.keys >= l.capacity) {
            self.layers.push(Layer::new(last.max(FIRST_LAYER) * 2));
        }
        if let Some(l) = self.layers.last_mut() {
            l.insert(h);
        }
    }

    /// False only if `key` of `cf` was never inserted.
    pub(crate) fn may_contain(&self, cf: u8, key: &[u8]) -> bool {
        let h = hash(cf, key);
        self.layers.iter().any(|l| l.contains(h))
    }

    /// Keys inserted (a key inserted again, or one that already answered "maybe", counts
    /// once).
    pub(crate) fn len(&self) -> usize {
        self.layers.iter().map(|l| l.keys).sum()
    }

    /// Bytes of its bit arrays.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.layers.iter().map(|l| l.blocks.len() * 64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_says_no_to_an_inserted_key_and_rarely_yes_to_others() {
        let mut f = MayExist::with_capacity(10_000);
        let mut maybe_already = 0;
        for i in 0..100_000u32 {
            let key = format!("acme\0key-{i}");
            maybe_already += usize::from(f.may_contain(2, key.as_bytes()));
            f.insert(2, key.as_bytes());
        }
        assert!(f.layers.len() > 1, "it grew");
        for i in 0..100_000u32 {
            assert!(f.may_contain(2, format!("acme\0key-{i}").as_bytes()));
        }
        let false_positives = (0..100_000u32)
            .filter(|i| f.may_contain(2, format!("acme\0other-{i}").as_bytes()))
            .count();
        // Several layers are asked, each about 1 % when full.
        assert!(false_positives < 4_000, "{false_positives}");
        // The column family is part of the key.
        let other_cf = (0..1000u32)
            .filter(|i| f.may_contain(3, format!("acme\0key-{i}").as_bytes()))
            .count();
        assert!(other_cf < 60, "{other_cf}");
        // Exactly the keys that already answered "maybe" went uncounted (the seed is random
        // per process, so their number varies from run to run: about 1 %).
        assert_eq!(f.len(), 100_000 - maybe_already);
        assert!(maybe_already < 4_000, "{maybe_already}");
    }

    #[test]
    fn rewriting_the_same_keys_does_not_grow_it() {
        let mut f = MayExist::with_capacity(1_000);
        let keys: Vec<String> = (0..500).map(|i| format!("acme\0agent-{i}")).collect();
        for k in &keys {
            f.insert(1, k.as_bytes());
        }
        let (len, bytes) = (f.len(), f.bytes());
        // Every batch rewrites its hot aggregates: a thousand rewrites of each key.
        for _ in 0..1_000 {
            for k in &keys {
                f.insert(1, k.as_bytes());
            }
        }
        assert_eq!((f.len(), f.bytes()), (len, bytes));
        assert_eq!(f.layers.len(), 1);
        assert!(keys.iter().all(|k| f.may_contain(1, k.as_bytes())));
        assert!(total_bytes() >= bytes);
    }
}
