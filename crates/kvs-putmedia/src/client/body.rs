//! The request body of one connection: [`ChannelBody`], fed by the driver with [`BodyChunk`]s
//! (the MKV header, then whole fragments) and written with vectored I/O ([`BodyBuf`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::session::{ConnShared, Shared};
use super::transport::Connector;

/// The client that carries PutMedia requests with these bodies.
pub(crate) type HttpClient = hyper_util::client::legacy::Client<Connector, ChannelBody>;

/// One piece of the request body.
#[derive(Debug)]
pub(crate) struct BodyChunk {
    pub(crate) data: BodyBuf,
    /// Set on the chunk that carries a whole fragment: its timecode.
    pub(crate) ends_fragment: Option<u64>,
}

impl BodyChunk {
    pub(crate) fn header(bytes: Bytes) -> Self {
        Self {
            data: BodyBuf::new(vec![bytes]),
            ends_fragment: None,
        }
    }

    /// A whole fragment (with its end-of-fragment tag), as `State::take_for_send` gives it.
    pub(crate) fn fragment(timecode: u64, parts: Vec<Bytes>) -> Self {
        Self {
            data: BodyBuf::new(parts),
            ends_fragment: Some(timecode),
        }
    }
}

/// The chunked request body of one connection: whatever the driver queued, as it is queued.
/// Ends (hyper then writes the terminating zero-length chunk) when the driver drops its sender.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::UnboundedReceiver<BodyChunk>,
    shared: Arc<Shared>,
    conn: Arc<ConnShared>,
}

impl Body for ChannelBody {
    type Data = BodyBuf;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<BodyBuf>, std::io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => {
                self.shared.on_sent(&chunk, &self.conn);
                Poll::Ready(Some(Ok(Frame::data(chunk.data))))
            }
            Poll::Ready(None) if self.conn.aborted.load(Ordering::Acquire) => {
                Poll::Ready(Some(Err(std::io::Error::other(
                    "PutMedia request abandoned after a failure",
                ))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

pub(crate) fn channel_body(
    shared: &Arc<Shared>,
    conn: &Arc<ConnShared>,
) -> (mpsc::UnboundedSender<BodyChunk>, ChannelBody) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        tx,
        ChannelBody {
            rx,
            shared: shared.clone(),
            conn: conn.clone(),
        },
    )
}
/// One piece of the request body: a fragment's slices (or the header), sent as one HTTP chunk
/// with vectored writes, without copying them together.
#[derive(Debug, Default)]
pub struct BodyBuf {
    parts: Vec<Bytes>,
    idx: usize,
    remaining: usize,
}

impl BodyBuf {
    fn new(mut parts: Vec<Bytes>) -> Self {
        parts.retain(|p| !p.is_empty());
        let remaining = parts.iter().map(Bytes::len).sum();
        Self {
            parts,
            idx: 0,
            remaining,
        }
    }
}

impl Buf for BodyBuf {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.get(self.idx).map_or(&[], |b| &b[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of a BodyBuf");
        self.remaining -= cnt;
        while cnt > 0 {
            let part = &mut self.parts[self.idx];
            if cnt < part.len() {
                part.advance(cnt);
                return;
            }
            cnt -= part.len();
            self.idx += 1;
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, part) in dst.iter_mut().zip(&self.parts[self.idx..]) {
            *slot = std::io::IoSlice::new(part);
            n += 1;
        }
        n
    }
}

impl Shared {
    /// A chunk of connection `conn`'s body went to hyper: counts its bytes, wakes the
    /// connection's first-ack timer, and dates the fragment it ends (for ack latency and the
    /// drain check).
    pub(crate) fn on_sent(&self, chunk: &BodyChunk, conn: &ConnShared) {
        let now = Instant::now();
        let mut st = self.lock();
        st.record_sent(chunk.data.remaining() as u64, now);
        if !conn.first_byte_sent.swap(true, Ordering::Relaxed) {
            conn.first_byte.notify_one();
        }
        if let Some(tc) = chunk.ends_fragment {
            st.ledger.on_last_byte_sent(tc, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_buf_walks_all_parts_in_order() {
        let parts = vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"de"),
            Bytes::from_static(b"fghij"),
        ];
        let mut b = BodyBuf::new(parts);
        assert_eq!(b.remaining(), 10);
        let mut slices = [std::io::IoSlice::new(&[]); 8];
        assert_eq!(b.chunks_vectored(&mut slices), 3);
        b.advance(4);
        assert_eq!(b.chunk(), b"e");
        let mut out = Vec::new();
        while b.has_remaining() {
            let c = b.chunk().to_vec();
            b.advance(c.len());
            out.extend(c);
        }
        assert_eq!(out, b"efghij");
        assert_eq!(b.remaining(), 0);
        assert_eq!(b.chunk(), b"");
    }
}
