//! The input buffer: a queue of pushed chunks, consumed from the front without copying.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Buffered input. Bytes leave it as reference-counted slices of the chunks that were pushed.
#[derive(Debug, Default)]
pub(crate) struct Input {
    chunks: VecDeque<Bytes>,
    len: usize,
    /// Input offset of the first buffered byte.
    offset: u64,
}

/// A block payload: slices of the input, usually one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Payload {
    One(Bytes),
    Two(Bytes, Bytes),
    // Only for payloads spanning three or more input chunks, which outweigh the allocation.
    Many(Vec<Bytes>),
}

impl Payload {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::One(a) => a.len(),
            Self::Two(a, b) => a.len() + b.len(),
            Self::Many(v) => v.iter().map(Bytes::len).sum(),
        }
    }

    pub(crate) fn append_to(&self, out: &mut Vec<Bytes>) {
        match self {
            Self::One(a) => out.push(a.clone()),
            Self::Two(a, b) => {
                out.push(a.clone());
                out.push(b.clone());
            }
            Self::Many(v) => out.extend(v.iter().cloned()),
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
                let _ = front.split_to(n);
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
        let second = self.take_front(n - first.len());
        if first.len() + second.len() == n {
            return Payload::Two(first, second);
        }
        let mut v = vec![first, second];
        let mut got: usize = v.iter().map(Bytes::len).sum();
        while got < n {
            let b = self.take_front(n - got);
            got += b.len();
            v.push(b);
        }
        Payload::Many(v)
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
