//! A partition's accounts, in arrival order, in chunks of [`CHUNK`]
//! accounts, so that a snapshot takes a consistent copy of a million
//! accounts in microseconds: [`Accounts::copy`] puts each chunk behind an
//! `Arc` and clones the `Arc`s. While the copy is alive (the snapshot is
//! being encoded and written on another thread), the first change to an
//! account of a shared chunk clones that chunk (its [`CHUNK`] accounts,
//! tens of microseconds); once the copy is gone, the first change takes
//! the chunk back without copying. So the fold pays for the copy
//! piecewise, one chunk at a time, never all of it at once. A chunk no
//! copy ever saw is plainly owned: changing an account costs no atomic
//! operation (a reference-count check per event was 3% of the fold).
//!
//! The accounts lie in their chunk, not behind a pointer each: an
//! `Arc<Account>` per account (as before) cost its header, its pointer
//! and the allocator's rounding, and one more dependent load per event.

use std::ops::{Index, IndexMut};
use std::sync::Arc;

use super::account::{Account, Support, Surveys};

const SHIFT: usize = 8;
/// Accounts per chunk.
pub const CHUNK: usize = 1 << SHIFT;

/// Asks the processor to fetch the cache line holding `p` (a hint: it
/// never faults and reads nothing, so `p` may lie past an allocation's
/// end; nothing on other architectures).
#[inline]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is a hint that never faults, for any address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// [`prefetch_line`] of the two cache lines from `p` on.
#[inline]
fn prefetch_two(p: *const u8) {
    prefetch_line(p);
    prefetch_line(p.wrapping_add(64));
}

/// Asks for the first two cache lines of `a`'s users and features.
#[inline]
fn prefetch_usage_of(a: &Account) {
    prefetch_two(a.users.as_ptr().cast::<u8>());
    prefetch_two(a.features.as_ptr().cast::<u8>());
}

/// One chunk: owned, or shared with a snapshot copy.
#[derive(Debug, Clone)]
enum Chunk {
    Own(Vec<Account>),
    Shared(Arc<Vec<Account>>),
}

impl Chunk {
    fn accounts(&self) -> &[Account] {
        match self {
            Chunk::Own(v) => v,
            Chunk::Shared(v) => v,
        }
    }

    /// The chunk's accounts to change: a shared chunk is taken back
    /// first, cloned if a copy still holds it.
    fn accounts_mut(&mut self) -> &mut Vec<Account> {
        if let Chunk::Shared(v) = self {
            let v = std::mem::take(v);
            *self = Chunk::Own(Arc::unwrap_or_clone(v));
        }
        match self {
            Chunk::Own(v) => v,
            Chunk::Shared(_) => unreachable!("a shared chunk was just taken back"),
        }
    }

    /// The chunk behind an `Arc` (moved there if owned), for a copy.
    fn share(&mut self) -> Arc<Vec<Account>> {
        if let Chunk::Own(v) = self {
            *self = Chunk::Shared(Arc::new(std::mem::take(v)));
        }
        match self {
            Chunk::Shared(v) => Arc::clone(v),
            Chunk::Own(_) => unreachable!("an owned chunk was just shared"),
        }
    }
}

/// The accounts of a partition; index = arrival order. Every chunk but
/// the last holds exactly [`CHUNK`] accounts. `clone` copies the owned
/// chunks and shares those a snapshot copy already shares (a write to
/// either side copies the chunk first); [`Accounts::copy`] is the cheap
/// copy a snapshot takes, sharing every chunk.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    chunks: Vec<Chunk>,
    len: usize,
}

impl Accounts {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, a: Account) {
        if self.len % CHUNK == 0 {
            self.chunks.push(Chunk::Own(Vec::with_capacity(CHUNK)));
        }
        if let Some(last) = self.chunks.last_mut() {
            last.accounts_mut().push(a);
            self.len += 1;
        }
    }

    /// A consistent copy of the accounts that shares every chunk with
    /// these until one side changes it (a reference-count increment per
    /// chunk).
    pub fn copy(&mut self) -> Accounts {
        Accounts {
            chunks: self
                .chunks
                .iter_mut()
                .map(|c| Chunk::Shared(c.share()))
                .collect(),
            len: self.len,
        }
    }

    /// Appends `o`'s accounts after these: its chunks are moved, not their
    /// accounts, when these fill whole chunks (a restore decodes blocks
    /// of accounts on several threads and joins them in order).
    pub fn append(&mut self, o: Accounts) {
        if self.len % CHUNK == 0 {
            self.len += o.len;
            self.chunks.extend(o.chunks);
            return;
        }
        for mut c in o.chunks {
            for a in std::mem::take(c.accounts_mut()) {
                self.push(a);
            }
        }
    }

    pub fn get(&self, i: usize) -> Option<&Account> {
        self.chunks.get(i >> SHIFT)?.accounts().get(i & (CHUNK - 1))
    }

    /// Asks the processor to fetch account `i` into the cache (a hint: no
    /// effect on what any code reads).
    #[inline]
    pub fn prefetch(&self, i: usize) {
        if let Some(a) = self.get(i) {
            let p = (a as *const Account).cast::<u8>();
            for l in 0..std::mem::size_of::<Account>().div_ceil(64) {
                prefetch_line(p.wrapping_add(l * 64));
            }
        }
    }

    /// Asks for the first two cache lines of account `i`'s users and
    /// features (read by every usage event), once the account itself is
    /// in the cache.
    #[inline]
    pub fn prefetch_usage(&self, i: usize) {
        if let Some(a) = self.get(i) {
            prefetch_usage_of(a);
        }
    }

    /// Asks for the parts of account `i` that lie outside its chunk —
    /// users, features, MRR history, unpaid invoices, the support and
    /// survey parts — for a pass that reads every account in order (a
    /// snapshot's encoding): each is a cache miss of its own otherwise,
    /// and the pass waited on them more than it worked.
    #[inline]
    pub fn prefetch_parts(&self, i: usize) {
        if let Some(a) = self.get(i) {
            prefetch_usage_of(a);
            prefetch_line(a.mrr_history.as_ptr().cast::<u8>());
            prefetch_line(a.unpaid.as_ptr().cast::<u8>());
            if let Some(s) = a.support.as_deref() {
                prefetch_two((s as *const Support).cast::<u8>());
            }
            if let Some(s) = a.surveys.as_deref() {
                prefetch_two((s as *const Surveys).cast::<u8>());
            }
        }
    }

    /// Asks for account `i`'s open tickets, which hang off its support
    /// part: call it a few accounts after [`Accounts::prefetch_parts`]
    /// asked for that part (it reads the part's pointer to them).
    #[inline]
    pub fn prefetch_tickets(&self, i: usize) {
        if let Some(s) = self.get(i).and_then(|a| a.support.as_deref()) {
            prefetch_line(s.open_tickets.as_ptr().cast::<u8>());
        }
    }

    /// The account, its chunk taken back first if a copy shared it.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Account> {
        let chunk = self.chunks.get_mut(i >> SHIFT)?;
        if i & (CHUNK - 1) >= chunk.accounts().len() {
            return None;
        }
        chunk.accounts_mut().get_mut(i & (CHUNK - 1))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Account> + '_ {
        self.chunks.iter().flat_map(|c| c.accounts().iter())
    }

    /// Chunks this value shares with a live copy (for tests and metrics).
    pub fn shared_chunks(&self) -> usize {
        self.chunks
            .iter()
            .filter(|c| matches!(c, Chunk::Shared(v) if Arc::strong_count(v) > 1))
            .count()
    }
}

impl Index<usize> for Accounts {
    type Output = Account;
    fn index(&self, i: usize) -> &Account {
        match self.get(i) {
            Some(a) => a,
            None => panic!("account index {i} out of range ({})", self.len),
        }
    }
}

impl IndexMut<usize> for Accounts {
    fn index_mut(&mut self, i: usize) -> &mut Account {
        let len = self.len;
        match self.get_mut(i) {
            Some(a) => a,
            None => panic!("account index {i} out of range ({len})"),
        }
    }
}

impl PartialEq for Accounts {
    fn eq(&self, o: &Self) -> bool {
        self.len == o.len && self.iter().eq(o.iter())
    }
}

impl FromIterator<Account> for Accounts {
    fn from_iter<I: IntoIterator<Item = Account>>(it: I) -> Self {
        let mut a = Accounts::new();
        for x in it {
            a.push(x);
        }
        a
    }
}

impl<'a> IntoIterator for &'a Accounts {
    type Item = &'a Account;
    type IntoIter = Box<dyn Iterator<Item = &'a Account> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts(n: usize) -> Accounts {
        (0..n)
            .map(|i| Account::new(&format!("acct-{i}"), i as i64))
            .collect()
    }

    #[test]
    fn a_copy_is_cheap_and_writes_unshare_one_chunk() {
        let mut a = accounts(3 * CHUNK + 5);
        assert_eq!(a.len(), 3 * CHUNK + 5);
        assert_eq!(&*a[CHUNK + 7].id, format!("acct-{}", CHUNK + 7));
        let copy = a.copy();
        assert_eq!(a.shared_chunks(), 4);
        a[CHUNK + 7].touchpoints = 9;
        assert_eq!(a.shared_chunks(), 3, "only the written chunk is copied");
        assert!(
            std::ptr::eq(&a[7], &copy[7]) && std::ptr::eq(&a[2 * CHUNK], &copy[2 * CHUNK]),
            "the other chunks stay shared"
        );
        assert_eq!(copy[CHUNK + 7].touchpoints, 0, "the copy keeps the cut");
        assert_eq!(a[CHUNK + 7].touchpoints, 9);
        assert_ne!(a, copy);
        drop(copy);
        assert_eq!(a.shared_chunks(), 0);
        let before = &a[7] as *const Account;
        a[7].touchpoints = 3;
        assert!(
            std::ptr::eq(&a[7], before),
            "with the copy gone, the chunk is taken back without copying"
        );
        let deep = a.clone();
        assert_eq!(deep, a);
        assert!(
            !std::ptr::eq(&deep[8], &a[8]),
            "clone copies an owned chunk"
        );
        assert!(a.get(3 * CHUNK + 5).is_none());
        assert!(a.get_mut(3 * CHUNK + 5).is_none());
        assert_eq!(a.iter().count(), a.len());
    }

    #[test]
    fn append_keeps_order_with_whole_and_partial_chunks() {
        for (n, m) in [
            (0, 3),
            (CHUNK, CHUNK + 2),
            (CHUNK + 3, 2 * CHUNK + 1),
            (5, 0),
        ] {
            let mut a = accounts(n);
            let b: Accounts = (0..m)
                .map(|i| Account::new(&format!("acct-{}", n + i), (n + i) as i64))
                .collect();
            a.append(b);
            assert_eq!(a, accounts(n + m), "{n} + {m}");
            a.push(Account::new("last", 0));
            assert_eq!(&*a[n + m].id, "last");
        }
    }
}
