//! A partition's accounts, in arrival order, stored in chunks of [`CHUNK`]
//! accounts behind an `Arc` each, so that a snapshot takes a consistent
//! copy of a million accounts in microseconds: copying is cloning one
//! `Arc` per chunk. While the copy is alive (the snapshot is being encoded
//! and written on another thread), the first change to an account of a
//! shared chunk clones that chunk (its [`CHUNK`] accounts, tens of
//! microseconds). So the fold pays for the copy piecewise, one chunk at a
//! time, never all of it at once. With no copy alive, a change costs one
//! reference-count check.
//!
//! The accounts lie in their chunk, not behind a pointer each: an
//! `Arc<Account>` per account (as before) cost its header, its pointer
//! and the allocator's rounding — 32 bytes an account — and one more
//! dependent load on every event.

use std::ops::{Index, IndexMut};
use std::sync::Arc;

use super::account::Account;

const SHIFT: usize = 8;
/// Accounts per chunk.
pub const CHUNK: usize = 1 << SHIFT;

/// The accounts of a partition; index = arrival order. Every chunk but
/// the last holds exactly [`CHUNK`] accounts.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    chunks: Vec<Arc<Vec<Account>>>,
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
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        if let Some(last) = self.chunks.last_mut() {
            Arc::make_mut(last).push(a);
            self.len += 1;
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
        for c in o.chunks {
            for a in Arc::unwrap_or_clone(c) {
                self.push(a);
            }
        }
    }

    pub fn get(&self, i: usize) -> Option<&Account> {
        self.chunks.get(i >> SHIFT)?.get(i & (CHUNK - 1))
    }

    /// The account, its chunk unshared first if a copy holds it.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Account> {
        let chunk = self.chunks.get_mut(i >> SHIFT)?;
        if i & (CHUNK - 1) >= chunk.len() {
            return None;
        }
        Arc::make_mut(chunk).get_mut(i & (CHUNK - 1))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Account> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Chunks this value shares with a copy (for tests and metrics).
    pub fn shared_chunks(&self) -> usize {
        self.chunks
            .iter()
            .filter(|c| Arc::strong_count(c) > 1)
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
        let copy = a.clone();
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
