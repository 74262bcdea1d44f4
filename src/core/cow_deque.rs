//! A double-ended queue (push at the back, pop at the front, index, iterate)
//! stored in shared chunks, so that a copy costs one `Arc` clone per
//! [`CHUNK`] elements instead of copying them all: the duplicate memory
//! (up to a million ids per partition) is copied on every snapshot, on the
//! partition's thread, and a plain `VecDeque` made that copy most of the
//! snapshot stall. Full chunks never change; the last, partly filled one is
//! owned (not shared), so a push is a plain `Vec` push, and a copy copies
//! it (fewer than [`CHUNK`] elements). Popping never writes.

use std::collections::VecDeque;
use std::sync::Arc;

const SHIFT: usize = 12;
/// Elements per chunk.
pub const CHUNK: usize = 1 << SHIFT;

/// The elements are `chunks` (each exactly [`CHUNK`] long) then `tail`
/// (shorter), of which the first `head` are popped already (they stay
/// until their whole chunk is popped: at most `CHUNK - 1` of them).
#[derive(Clone)]
pub struct CowDeque<T> {
    chunks: VecDeque<Arc<Vec<T>>>,
    tail: Vec<T>,
    head: usize,
    len: usize,
}

impl<T> Default for CowDeque<T> {
    fn default() -> Self {
        CowDeque {
            chunks: VecDeque::new(),
            tail: Vec::new(),
            head: 0,
            len: 0,
        }
    }
}

impl<T: Clone> CowDeque<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push_back(&mut self, x: T) {
        if self.tail.capacity() == 0 {
            self.tail.reserve_exact(CHUNK);
        }
        self.tail.push(x);
        self.len += 1;
        if self.tail.len() == CHUNK {
            let full = std::mem::replace(&mut self.tail, Vec::with_capacity(CHUNK));
            self.chunks.push_back(Arc::new(full));
        }
    }

    /// Removes the front element (it is not returned: it may be shared).
    pub fn pop_front(&mut self) {
        if self.len == 0 {
            return;
        }
        self.head += 1;
        self.len -= 1;
        if !self.chunks.is_empty() && self.head == CHUNK {
            self.chunks.pop_front();
            self.head = 0;
        } else if self.len == 0 {
            // Everything popped lies in the tail.
            self.tail.clear();
            self.head = 0;
        }
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        let j = self.head + i;
        match self.chunks.get(j >> SHIFT) {
            Some(c) => c.get(j & (CHUNK - 1)),
            None => self.tail.get(j - self.chunks.len() * CHUNK),
        }
    }

    pub fn front(&self) -> Option<&T> {
        self.get(0)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        let skip = |k: usize| if k == 0 { self.head } else { 0 };
        let n = self.chunks.len();
        self.chunks
            .iter()
            .enumerate()
            .flat_map(move |(k, c)| c[skip(k)..].iter())
            .chain(self.tail[skip(n)..].iter())
    }
}

impl<T: Clone> FromIterator<T> for CowDeque<T> {
    fn from_iter<I: IntoIterator<Item = T>>(it: I) -> Self {
        let mut d = CowDeque::new();
        for x in it {
            d.push_back(x);
        }
        d
    }
}

impl<T: Clone + PartialEq> PartialEq for CowDeque<T> {
    fn eq(&self, o: &Self) -> bool {
        self.len == o.len && self.iter().eq(o.iter())
    }
}

impl<T: Clone + Eq> Eq for CowDeque<T> {}

impl<T: Clone + std::fmt::Debug> std::fmt::Debug for CowDeque<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_vecdeque_and_a_copy_keeps_its_contents() {
        let mut d = CowDeque::new();
        let mut model = VecDeque::new();
        let mut copies = Vec::new();
        let mut x = 1u64;
        for step in 0..20 * CHUNK as u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Grow on average (to a few chunks), with short runs of pops
            // and now and then one longer than a chunk.
            let pops = match x >> 59 {
                0 => (x >> 40) % 50,
                1 if (x >> 20) % 64 == 0 => CHUNK as u64 + 7,
                _ => 0,
            };
            if pops > 0 {
                for _ in 0..pops {
                    d.pop_front();
                    model.pop_front();
                }
            } else {
                d.push_back(step);
                model.push_back(step);
            }
            if step % 1000 == 0 {
                copies.push((d.clone(), model.clone()));
            }
            assert_eq!(d.len(), model.len());
            assert_eq!(d.front(), model.front());
            let mid = model.len() / 2;
            assert_eq!(d.get(mid), model.get(mid));
            assert_eq!(d.get(model.len()), None);
        }
        assert!(d.iter().eq(model.iter()));
        for (c, m) in &copies {
            assert!(
                c.iter().eq(m.iter()),
                "a copy is unchanged by what came after"
            );
            assert_eq!(c.len(), m.len());
        }
        let rebuilt: CowDeque<u64> = model.iter().copied().collect();
        assert_eq!(rebuilt, d);
    }

    #[test]
    fn a_copy_shares_every_full_chunk() {
        let mut d: CowDeque<u32> = (0..3 * CHUNK as u32 + 10).collect();
        let copy = d.clone();
        let shared = |a: &CowDeque<u32>, b: &CowDeque<u32>| {
            a.chunks
                .iter()
                .zip(&b.chunks)
                .filter(|(x, y)| Arc::ptr_eq(x, y))
                .count()
        };
        assert_eq!(shared(&d, &copy), 3);
        d.push_back(7);
        for _ in 0..CHUNK {
            d.pop_front();
        }
        assert_eq!(d.chunks.len(), 2);
        assert!(d
            .chunks
            .iter()
            .all(|c| copy.chunks.iter().any(|x| Arc::ptr_eq(c, x))));
        assert_eq!(copy.len(), 3 * CHUNK + 10);
        assert_eq!(copy.get(3 * CHUNK + 9), Some(&(3 * CHUNK as u32 + 9)));
        assert_eq!(d.get(2 * CHUNK + 10), Some(&7));
        assert_eq!(d.front(), Some(&(CHUNK as u32)));
    }
}
