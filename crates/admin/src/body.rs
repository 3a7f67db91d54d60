//! The `/metrics` response body: produced a part at a time, as the connection takes it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame};

use crate::conn::Counts;

/// How many bytes a source should render per part: big enough that chunk framing and polling
/// cost little, small enough that a scrape in progress holds little.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// The parts of one scrape's body, produced on demand (see [`crate::MetricsSource::scrape`]).
pub trait MetricsBody: Send + 'static {
    /// Appends the next part of the body to `out`; returns `false`, appending nothing, once
    /// the body is complete.
    fn next_part(&mut self, out: &mut String) -> bool;
}

impl<F: FnMut(&mut String) -> bool + Send + 'static> MetricsBody for F {
    fn next_part(&mut self, out: &mut String) -> bool {
        self(out)
    }
}

/// A body rendered in one go, given as its only part.
pub(crate) struct Whole(pub(crate) Option<String>);

impl MetricsBody for Whole {
    fn next_part(&mut self, out: &mut String) -> bool {
        match self.0.take() {
            Some(text) => {
                out.push_str(&text);
                true
            }
            None => false,
        }
    }
}

/// The source's parts, then the endpoint's own counters. hyper polls for the next frame only
/// when it has room to write it, so a client that reads slowly holds back the rendering
/// instead of making the server buffer the rest of the text.
pub(crate) struct Exposition {
    parts: Box<dyn MetricsBody>,
    /// Taken when the source is complete.
    counts: Option<Arc<Counts>>,
}

impl Exposition {
    pub(crate) fn new(parts: Box<dyn MetricsBody>, counts: Arc<Counts>) -> Self {
        Exposition {
            parts,
            counts: Some(counts),
        }
    }
}

impl Body for Exposition {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let mut out = String::new();
        // A source may give empty parts; skip them rather than send empty chunks.
        while out.is_empty() {
            if this.parts.next_part(&mut out) {
                continue;
            }
            match this.counts.take() {
                Some(counts) => counts.render(&mut out),
                None => break,
            }
        }
        if out.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}
