//! The input buffer: a queue of pushed chunks, consumed from the front without copying.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

/// Buffered input. Bytes leave it as reference-counted slices of the chunks that were pushed.
#[derive(Debug, Default)]
pub(crate) struct Input {
    chunks: VecDeque<Bytes>,
    len: usize,
    /// Input offset of the first buffered byte.
    offset: u64,
}

/// A block payload: slices of the input, usually one.
///
/// Kept to the size of one `Bytes`: every frame of every open fragment carries one (2,000
/// sessions hold ~150 frames each), and a payload split across input chunks is rare enough
/// (at most one per read) to pay for its own allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Payload {
    One(Bytes),
    Many(Box<[Bytes]>),
}

const _: () = assert!(std::mem::size_of::<Payload>() == std::mem::size_of::<Bytes>());

impl Payload {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::One(a) => a.len(),
            Self::Many(v) => v.iter().map(Bytes::len).sum(),
        }
    }

    /// Moves the slices into `out`, leaving this payload empty: a fragment is written once,
    /// so no reference count goes up for the copy and down again for the frame.
    pub(crate) fn move_to(&mut self, out: &mut Vec<Bytes>) {
        match std::mem::replace(self, Self::One(Bytes::new())) {
            Self::One(a) => out.push(a),
            Self::Many(v) => out.extend(v),
        }
    }
}

impl Input {
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Copy up to `buf.len()` bytes from the front without consuming; returns how many.
    pub(crate) fn peek(&self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        for c in &self.chunks {
            let k = (buf.len() - n).min(c.len());
            buf[n..n + k].copy_from_slice(&c[..k]);
            n += k;
            if n == buf.len() {
                break;
            }
        }
        n
    }

    /// Copy up to `buf.len()` bytes starting `skip` bytes in, without consuming.
    pub(crate) fn peek_at(&self, skip: usize, buf: &mut [u8]) -> usize {
        let mut skip = skip;
        let mut n = 0;
        for c in &self.chunks {
            if skip >= c.len() {
                skip -= c.len();
                continue;
            }
            let c = &c[skip..];
            skip = 0;
            let k = (buf.len() - n).min(c.len());
            buf[n..n + k].copy_from_slice(&c[..k]);
            n += k;
            if n == buf.len() {
                break;
            }
        }
        n
    }

    /// Drop `n` buffered bytes (`n <= len`).
    pub(crate) fn skip(&mut self, mut n: usize) {
        debug_assert!(n <= self.len);
        self.len -= n;
        self.offset += n as u64;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                // Moves the start: no slice made and dropped (two reference-count updates
                // per block header otherwise).
                front.advance(n);
                n = 0;
            }
        }
    }

    /// Take `n` buffered bytes (`n <= len`) as slices of the input.
    pub(crate) fn take_payload(&mut self, n: usize) -> Payload {
        debug_assert!(n <= self.len);
        let first = self.take_front(n);
        if first.len() == n {
            return Payload::One(first);
        }
        let mut got = first.len();
        let mut v = vec![first];
        while got < n {
            let b = self.take_front(n - got);
            got += b.len();
            v.push(b);
        }
        Payload::Many(v.into_boxed_slice())
    }

    /// Take `n` bytes (`n <= len`) contiguously: a slice when they lie in one chunk, else a copy.
    pub(crate) fn take_contiguous(&mut self, n: usize) -> Bytes {
        debug_assert!(n <= self.len);
        if self.chunks.front().is_some_and(|c| c.len() >= n) {
            return self.take_front(n);
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let b = self.take_front(n - out.len());
            out.extend_from_slice(&b);
        }
        out.freeze()
    }

    /// Up to `n` bytes from the front chunk.
    fn take_front(&mut self, n: usize) -> Bytes {
        let Some(front) = self.chunks.front_mut() else {
            return Bytes::new();
        };
        let out = if front.len() <= n {
            let b = std::mem::take(front);
            self.chunks.pop_front();
            b
        } else {
            front.split_to(n)
        };
        self.len -= out.len();
        self.offset += out.len() as u64;
        out
    }
}
