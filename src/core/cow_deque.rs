//! A double-ended queue (push at the back, pop at the front, index, iterate)
//! stored in shared chunks, so that a copy costs one `Arc` clone per
//! [`CHUNK`] elements instead of copying them all: the duplicate memory
//! (up to a million ids per partition) is copied on every snapshot, on the
//! partition's thread, and a plain `VecDeque` made that copy most of the
//! snapshot stall. After a copy, the first push clones the last chunk only
//! (the others are full and never change); popping never writes.

use std::collections::VecDeque;
use std::sync::Arc;

const SHIFT: usize = 12;
/// Elements per chunk.
pub const CHUNK: usize = 1 << SHIFT;

/// Every chunk but the last holds exactly [`CHUNK`] elements, so element
/// `i` is at `head + i` counted from the first chunk's start; `head` counts
/// the first chunk's elements already popped (they stay until the whole
/// chunk is popped: at most `CHUNK - 1` of them).
#[derive(Clone)]
pub struct CowDeque<T> {
    chunks: VecDeque<Arc<Vec<T>>>,
    head: usize,
    len: usize,
}

impl<T> Default for CowDeque<T> {
    fn default() -> Self {
        CowDeque {
            chunks: VecDeque::new(),
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
        if self.chunks.back().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push_back(Arc::new(Vec::with_capacity(CHUNK)));
        }
        if let Some(last) = self.chunks.back_mut() {
            let last = Arc::make_mut(last);
            // A clone of a shared chunk has no spare room: grow it to a
            // whole chunk at once.
            last.reserve_exact(CHUNK - last.len());
            last.push(x);
            self.len += 1;
        }
    }

    /// Removes the front element (it is not returned: it may be shared).
    pub fn pop_front(&mut self) {
        if self.len == 0 {
            return;
        }
        self.head += 1;
        self.len -= 1;
        if self.chunks.front().is_some_and(|c| self.head == c.len()) {
            self.chunks.pop_front();
            self.head = 0;
        }
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        let j = self.head + i;
        self.chunks.get(j >> SHIFT)?.get(j & (CHUNK - 1))
    }

    pub fn front(&self) -> Option<&T> {
        self.get(0)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        let head = self.head;
        self.chunks
            .iter()
            .enumerate()
            .flat_map(move |(k, c)| c[if k == 0 { head } else { 0 }..].iter())
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
    fn a_copy_shares_every_chunk_and_a_push_unshares_only_the_last() {
        let mut d: CowDeque<u32> = (0..3 * CHUNK as u32 + 10).collect();
        let copy = d.clone();
        let shared = |a: &CowDeque<u32>, b: &CowDeque<u32>| {
            a.chunks
                .iter()
                .zip(&b.chunks)
                .filter(|(x, y)| Arc::ptr_eq(x, y))
                .count()
        };
        assert_eq!(shared(&d, &copy), 4);
        d.push_back(7);
        d.pop_front();
        assert_eq!(shared(&d, &copy), 3);
        assert_eq!(copy.len(), 3 * CHUNK + 10);
        assert_eq!(copy.get(3 * CHUNK + 9), Some(&(3 * CHUNK as u32 + 9)));
        assert_eq!(d.get(3 * CHUNK + 9), Some(&7));
    }
}
