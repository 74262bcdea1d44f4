//! A partition's accounts, in arrival order, stored copy-on-write at two
//! levels so that a snapshot takes a consistent copy of a million accounts
//! in microseconds: copying is cloning one `Arc` per [`CHUNK`] accounts.
//! While the copy is alive (the snapshot is being encoded and written on
//! another thread), the first change to an account of a shared chunk
//! clones that chunk's table of [`CHUNK`] account pointers (reference
//! count increments, a few microseconds), and the first change to a shared
//! account clones that one account. So the fold pays for the copy
//! piecewise — one account at a time, never all of it at once, even when
//! one event fires timers across the whole partition. With no copy alive,
//! a change costs two reference-count checks.

use std::ops::{Index, IndexMut};
use std::sync::Arc;

use super::account::Account;

const SHIFT: usize = 10;
/// Accounts per chunk.
pub const CHUNK: usize = 1 << SHIFT;

/// The accounts of a partition; index = arrival order.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    chunks: Vec<Arc<Vec<Arc<Account>>>>,
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
        self.push_shared(Arc::new(a));
    }

    /// Appends an account already behind its `Arc` (a restore allocates
    /// them on several threads).
    pub fn push_shared(&mut self, a: Arc<Account>) {
        if self.len % CHUNK == 0 {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        if let Some(last) = self.chunks.last_mut() {
            Arc::make_mut(last).push(a);
            self.len += 1;
        }
    }

    pub fn get(&self, i: usize) -> Option<&Account> {
        self.chunks
            .get(i >> SHIFT)?
            .get(i & (CHUNK - 1))
            .map(|a| &**a)
    }

    /// The account, unshared first if a copy holds its chunk.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Account> {
        let chunk = Arc::make_mut(self.chunks.get_mut(i >> SHIFT)?);
        chunk.get_mut(i & (CHUNK - 1)).map(Arc::make_mut)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Account> + '_ {
        self.chunks.iter().flat_map(|c| c.iter().map(|a| &**a))
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

impl FromIterator<Arc<Account>> for Accounts {
    fn from_iter<I: IntoIterator<Item = Arc<Account>>>(it: I) -> Self {
        let mut a = Accounts::new();
        for x in it {
            a.push_shared(x);
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

    #[test]
    fn a_copy_is_cheap_and_writes_unshare_one_chunk() {
        let mut a: Accounts = (0..3 * CHUNK + 5)
            .map(|i| Account::new(&format!("acct-{i}"), i as i64))
            .collect();
        assert_eq!(a.len(), 3 * CHUNK + 5);
        assert_eq!(&*a[CHUNK + 7].id, format!("acct-{}", CHUNK + 7));
        let copy = a.clone();
        assert_eq!(a.shared_chunks(), 4);
        a[CHUNK + 7].touchpoints = 9;
        assert_eq!(a.shared_chunks(), 3, "only the written chunk is copied");
        assert!(
            std::ptr::eq(&a[CHUNK + 8], &copy[CHUNK + 8]),
            "its other accounts stay shared"
        );
        assert_eq!(copy[CHUNK + 7].touchpoints, 0, "the copy keeps the cut");
        assert_eq!(a[CHUNK + 7].touchpoints, 9);
        assert_ne!(a, copy);
        drop(copy);
        assert_eq!(a.shared_chunks(), 0);
        assert!(a.get(3 * CHUNK + 5).is_none());
        assert_eq!(a.iter().count(), a.len());
    }
}
