//! Watching a request body's gRPC framing for a message over the size limit.
//!
//! tonic refuses a message whose 5-byte frame header declares more than the limit before
//! reading it, and names the size only in the English text of its status. The server needs the
//! size to tell the client (which splits its batch accordingly), so it reads the headers itself
//! as the body passes through.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};

/// The first declared message length over the limit, shared between the body (which writes it)
/// and the handler (which reads it once the call has failed). 0: none seen.
#[derive(Clone, Debug, Default)]
pub(super) struct Oversized(Arc<AtomicUsize>);

impl Oversized {
    /// The declared length of the first message over the limit, if one was seen.
    pub(super) fn get(&self) -> Option<usize> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }
}

/// Where the body is in its sequence of `[flag][u32 length][message]` frames.
#[derive(Debug)]
struct Framing {
    header: [u8; 5],
    /// Header bytes collected so far (0..5).
    have: usize,
    /// Message bytes still to pass before the next header.
    skip: usize,
    limit: usize,
    oversized: Oversized,
}

impl Framing {
    fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (self.header.len() - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == self.header.len() {
                self.have = 0;
                let [_, a, b, c, d] = self.header;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if len > self.limit {
                    // Only the first counts: tonic stops at it.
                    let _ = self.oversized.0.compare_exchange(
                        0,
                        len,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                self.skip = len;
            }
        }
    }
}

/// A request body passed through unchanged while its frame headers are read.
pub(super) struct FrameWatch<B> {
    inner: Pin<Box<B>>,
    framing: Framing,
}

impl<B> FrameWatch<B> {
    /// Watches `inner` for a message over `limit` bytes.
    pub(super) fn new(inner: B, limit: usize) -> (Self, Oversized) {
        let oversized = Oversized::default();
        let watch = FrameWatch {
            inner: Box::pin(inner),
            framing: Framing {
                header: [0; 5],
                have: 0,
                skip: 0,
                limit,
                oversized: oversized.clone(),
            },
        };
        (watch, oversized)
    }

    /// `request` with its body watched for a message over `limit` bytes.
    pub(super) fn request(
        request: http::Request<B>,
        limit: usize,
    ) -> (http::Request<FrameWatch<B>>, Oversized) {
        let (parts, body) = request.into_parts();
        let (body, oversized) = FrameWatch::new(body, limit);
        (http::Request::from_parts(parts, body), oversized)
    }
}

impl<B> Body for FrameWatch<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = this.inner.as_mut().poll_frame(cx);
        polled.map(|frame| {
            frame.map(|frame| {
                frame.map(|frame| {
                    frame.map_data(|mut data| {
                        // Zero-copy for hyper's `Bytes` chunks.
                        let bytes = data.copy_to_bytes(data.remaining());
                        this.framing.observe(&bytes);
                        bytes
                    })
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(limit: usize) -> Framing {
        Framing {
            header: [0; 5],
            have: 0,
            skip: 0,
            limit,
            oversized: Oversized::default(),
        }
    }

    #[test]
    fn headers_split_anywhere_are_read() {
        let mut stream = vec![0, 0, 0, 0, 3, b'a', b'b', b'c'];
        stream.extend([0, 0, 0, 0x07, 0xd0]); // 2000 bytes declared
        for cut in 0..stream.len() {
            let mut f = framing(1024);
            f.observe(&stream[..cut]);
            f.observe(&stream[cut..]);
            assert_eq!(f.oversized.get(), Some(2000), "cut at {cut}");
        }
        let mut f = framing(1024);
        for byte in &stream[..8] {
            f.observe(std::slice::from_ref(byte));
        }
        assert_eq!(f.oversized.get(), None);
        assert_eq!((f.have, f.skip), (0, 0));
    }

    #[test]
    fn a_message_at_the_limit_is_not_oversized() {
        let mut f = framing(3);
        f.observe(&[0, 0, 0, 0, 3, 1, 2, 3, 1, 0, 0, 0, 4]);
        assert_eq!(f.oversized.get(), Some(4));
        let mut f = framing(3);
        f.observe(&[0, 0, 0, 0, 3, 1, 2, 3]);
        assert_eq!(f.oversized.get(), None);
    }
}
