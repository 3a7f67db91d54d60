//! A TLS stream over rustls' unbuffered API whose record buffers come from the thread's pool
//! and go back to it whenever they hold nothing: an idle connection keeps only rustls' state
//! (keys, the peer's certificate), not the 4 KiB reader buffer the buffered API keeps for a
//! connection's life.
//!
//! Reads and writes go through one object (`tokio::io::split` shares it between the two
//! directions of a connection, both polled by one task). Every call processes whatever TLS
//! bytes are waiting, so a write may meet application data or the peer's close: the data is
//! kept for the reader and the reader's task is woken.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use meshmeter_certs::rustls;
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::CertificateDer;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::forward::pool;

/// Small buffers: the largest TLS 1.3 record (16 KiB of plaintext, its content type, the AEAD
/// tag and padding allowance, the header) fits one. Handshake flights and small writes use it.
const RECORD_BUF: usize = 16 * 1024 + 1024;
/// The most plaintext one record carries.
const MAX_PLAINTEXT: usize = 16 * 1024;
/// Records one write encrypts, and about as many one socket read takes in once data streams:
/// bulk data moves 256 KiB per system call rather than one 16 KiB record per call. The system
/// calls and the wakeups they cause (each one of the peer process), not the cipher, were most
/// of the mTLS path's CPU; BENCHMARKS.md has the same-run comparison of 4 and 16 records.
/// The cost is memory while a connection streams (these buffers and the pumps' are pooled and
/// held only while bytes wait in them; an idle connection holds none).
const BULK_RECORDS: usize = 16;
/// Bulk buffers: `BULK_RECORDS` full records. Also the largest TLS message (a handshake
/// flight) accepted.
const BULK_BUF: usize = BULK_RECORDS * RECORD_BUF;
/// The most plaintext one write encrypts.
const MAX_WRITE: usize = BULK_RECORDS * MAX_PLAINTEXT;

/// The side-specific entry point of the unbuffered API.
pub(crate) trait Unbuffered: Send + Unpin {
    /// Connection data of the side.
    type Data;
    /// `process_tls_records` of the side.
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    /// The peer's verified certificate chain.
    fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]>;
}

impl Unbuffered for UnbufferedServerConnection {
    type Data = rustls::server::ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        std::ops::Deref::deref(self).peer_certificates()
    }
}

impl Unbuffered for UnbufferedClientConnection {
    type Data = rustls::client::ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        std::ops::Deref::deref(self).peer_certificates()
    }
}

/// What one round of processing found.
enum Step {
    /// Plaintext was delivered (to the caller's buffer or kept for the reader).
    Data,
    /// TLS bytes were queued for the peer (more may follow at once).
    Queued,
    /// Nothing more without bytes from the peer; `handshaking` until the handshake is done.
    NeedData { handshaking: bool },
    /// The peer closed its side (close_notify), or both did.
    PeerClosed,
    /// This much of the data to write was encrypted and queued.
    Written(usize),
}

/// TLS bytes for the peer (`buf[start..end]`); no buffer when there are none.
#[derive(Default)]
struct OutBuf {
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
}

impl OutBuf {
    /// Room for at least `n` more bytes (a buffer from the pool when there is none).
    fn room(&mut self, n: usize) -> &mut [u8] {
        let have = self.buf.as_ref().map_or(0, |b| b.len());
        if have - self.end < n {
            let len = self.end - self.start;
            let mut fresh = take(len + n);
            if let Some(old) = self.buf.take() {
                fresh[..len].copy_from_slice(&old[self.start..self.end]);
                give(old);
            }
            self.buf = Some(fresh);
            self.start = 0;
            self.end = len;
        }
        match self.buf.as_deref_mut() {
            Some(b) => &mut b[self.end..],
            None => &mut [],
        }
    }

    /// Writes the bytes out to `tcp`; the buffer goes back once empty.
    fn poll_flush(&mut self, tcp: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.start < self.end {
            let Some(b) = self.buf.as_deref() else {
                break;
            };
            let n =
                std::task::ready!(Pin::new(&mut *tcp).poll_write(cx, &b[self.start..self.end]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.start += n;
        }
        self.start = 0;
        self.end = 0;
        if let Some(b) = self.buf.take() {
            give(b);
        }
        Poll::Ready(Ok(()))
    }
}

/// A TLS connection over a TCP socket; see the module docs.
pub(crate) struct LeanTls<C> {
    pub(crate) tcp: TcpStream,
    conn: C,
    /// TLS bytes received and not processed yet (`incoming[start..used]`); `None` when none
    /// are.
    incoming: Option<Box<[u8]>>,
    start: usize,
    used: usize,
    out: OutBuf,
    /// The last socket read filled the incoming buffer: more is likely waiting.
    streaming: bool,
    /// close_notify is queued or sent.
    closing: bool,
    /// Plaintext a reader has not taken yet (`plaintext[taken..]`; rarely anything).
    plaintext: Vec<u8>,
    taken: usize,
    /// The peer's close_notify arrived (reads end) or its socket closed.
    peer_closed: bool,
    /// The reader, when a write may find data or the close meant for it.
    read_waker: Option<Waker>,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<C: Unbuffered> LeanTls<C> {
    pub(crate) fn new(tcp: TcpStream, conn: C) -> Self {
        LeanTls {
            tcp,
            conn,
            incoming: None,
            start: 0,
            used: 0,
            out: OutBuf::default(),
            streaming: false,
            closing: false,
            plaintext: Vec::new(),
            taken: 0,
            peer_closed: false,
            read_waker: None,
        }
    }

    /// The peer's verified certificate chain.
    pub(crate) fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// Processes the TLS bytes waiting; plaintext goes to `into` when given (what does not fit,
    /// and all of it otherwise, is kept for the reader). When rustls is ready for application
    /// data and `write` has some, it is encrypted and queued.
    fn step(
        &mut self,
        mut into: Option<&mut ReadBuf<'_>>,
        write: Option<&[u8]>,
    ) -> io::Result<Step> {
        let mut empty = [0u8; 0];
        let incoming = match self.incoming.as_deref_mut() {
            Some(b) => &mut b[self.start..self.used],
            None => &mut empty[..],
        };
        let UnbufferedStatus { discard, state } = self.conn.process(incoming);
        let step = match state {
            // After an error nothing is processed again: the discard does not matter.
            Err(e) => return Err(tls_error(e)),
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                let mut delivered = false;
                while let Some(record) = traffic.next_record() {
                    let payload = record.map_err(tls_error)?.payload;
                    let mut rest = payload;
                    if let Some(buf) = into.as_deref_mut() {
                        if self.plaintext.len() == self.taken {
                            let n = rest.len().min(buf.remaining());
                            buf.put_slice(&rest[..n]);
                            rest = &rest[n..];
                        }
                    }
                    self.plaintext.extend_from_slice(rest);
                    delivered = true;
                }
                if delivered {
                    Step::Data
                } else {
                    Step::Queued
                }
            }
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                let mut need = 0;
                loop {
                    let room = self.out.room(need);
                    match encode.encode(room) {
                        Ok(n) => {
                            self.out.end += n;
                            break;
                        }
                        Err(EncodeError::InsufficientSize(s)) => need = s.required_size,
                        Err(EncodeError::AlreadyEncoded) => break,
                    }
                }
                Step::Queued
            }
            // The bytes stay queued in order ahead of anything written later, so rustls may
            // go on at once; they leave with the next flush.
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                transmit.done();
                Step::Queued
            }
            Ok(ConnectionState::BlockedHandshake) => Step::NeedData { handshaking: true },
            Ok(ConnectionState::WriteTraffic(mut traffic)) => match write {
                Some(data) if !data.is_empty() => {
                    let data = &data[..data.len().min(MAX_WRITE)];
                    let mut need = data.len() + 64 * data.len().div_ceil(MAX_PLAINTEXT);
                    loop {
                        let room = self.out.room(need);
                        match traffic.encrypt(data, room) {
                            Ok(n) => {
                                self.out.end += n;
                                break Step::Written(data.len());
                            }
                            Err(EncryptError::InsufficientSize(s)) if s.required_size > need => {
                                need = s.required_size;
                            }
                            Err(e) => return Err(io::Error::other(e)),
                        }
                    }
                }
                _ => Step::NeedData { handshaking: false },
            },
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => Step::PeerClosed,
            // Early data is not enabled; any other state is read as "wait for the peer".
            Ok(_) => Step::NeedData { handshaking: false },
        };
        self.discard(discard);
        if matches!(step, Step::PeerClosed) {
            self.peer_closed = true;
        }
        Ok(step)
    }

    /// Drops `n` processed bytes. The rest stays where it is (several records may wait in one
    /// buffer: moving them down after each would copy the buffer over and over); it moves
    /// down only when a read needs the room.
    fn discard(&mut self, n: usize) {
        self.start += n;
        self.release_incoming();
    }

    fn release_incoming(&mut self) {
        if self.start == self.used {
            self.start = 0;
            self.used = 0;
            if let Some(b) = self.incoming.take() {
                give(b);
            }
        }
    }

    /// Reads what the socket has into the incoming buffer: `Ok(false)` at EOF.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let len = self.incoming.as_ref().map_or(0, |b| b.len());
        if self.used == len {
            let held = self.used - self.start;
            // Room at the front (processed records) is enough unless data streams or the
            // unprocessed part fills most of the buffer: then the bulk size.
            if self.start > 0 && (len >= BULK_BUF || (!self.streaming && held < len / 2)) {
                if let Some(b) = self.incoming.as_deref_mut() {
                    b.copy_within(self.start..self.used, 0);
                }
            } else if len >= BULK_BUF {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("TLS message larger than {} KiB", BULK_BUF / 1024),
                )));
            } else {
                // A record's room first (handshakes, small messages), the bulk size when that
                // is outgrown or the last read filled its buffer (data is streaming).
                let size = if len > 0 || self.streaming {
                    BULK_BUF
                } else {
                    RECORD_BUF
                };
                let mut fresh = take(size);
                if let Some(old) = self.incoming.take() {
                    fresh[..held].copy_from_slice(&old[self.start..self.used]);
                    give(old);
                }
                self.incoming = Some(fresh);
            }
            self.start = 0;
            self.used = held;
        }
        let Some(b) = self.incoming.as_deref_mut() else {
            return Poll::Ready(Ok(false));
        };
        let mut buf = ReadBuf::new(&mut b[self.used..]);
        match Pin::new(&mut self.tcp).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                self.streaming = buf.remaining() == 0;
                self.used += n;
                self.release_incoming();
                Poll::Ready(Ok(n > 0))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // Idle: nothing partial is held, so the buffer goes back.
                self.release_incoming();
                Poll::Pending
            }
        }
    }

    /// Writes the queued TLS bytes out.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.out.poll_flush(&mut self.tcp, cx)
    }

    /// Sends the alert rustls queued when it failed, as far as the socket takes it. The next
    /// processing yields it before looking at the peer's bytes again; going further would
    /// process them again (and fail again), so it stops there.
    async fn send_alert(&mut self) {
        let _ = self.step(None, None);
        let _ = std::future::poll_fn(|cx| self.poll_flush_out(cx)).await;
    }

    /// Completes the handshake: errors carry the `rustls::Error` (for
    /// `HandshakeFailure::of_io`), or the socket's.
    pub(crate) async fn handshake(&mut self) -> io::Result<()> {
        loop {
            let step = match self.step(None, None) {
                Ok(step) => step,
                Err(e) => {
                    self.send_alert().await;
                    return Err(e);
                }
            };
            match step {
                Step::Queued => {}
                Step::NeedData { handshaking: true } => {
                    std::future::poll_fn(|cx| self.poll_flush_out(cx)).await?;
                    if !std::future::poll_fn(|cx| self.poll_fill(cx)).await? {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Step::NeedData { handshaking: false } | Step::Data | Step::Written(_) => {
                    return std::future::poll_fn(|cx| self.poll_flush_out(cx)).await;
                }
                Step::PeerClosed => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
        }
    }

    fn wake_reader(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
    }
}

/// A buffer of at least `n` bytes: one of the two pooled sizes when that is enough.
fn take(n: usize) -> Box<[u8]> {
    match n {
        0..=RECORD_BUF => pool::take(RECORD_BUF),
        _ if n <= BULK_BUF => pool::take(BULK_BUF),
        _ => vec![0; n].into_boxed_slice(),
    }
}

fn give(b: Box<[u8]>) {
    if b.len() == RECORD_BUF || b.len() == BULK_BUF {
        pool::give(b);
    }
}

impl<C: Unbuffered> AsyncRead for LeanTls<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        loop {
            if this.taken < this.plaintext.len() {
                let n = (this.plaintext.len() - this.taken).min(buf.remaining());
                buf.put_slice(&this.plaintext[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            // Bytes rustls queued while reading (tickets, a key update) leave as they can; a
            // blocked socket wakes this task when it drains.
            if let Poll::Ready(Err(e)) = this.poll_flush_out(cx) {
                return Poll::Ready(Err(e));
            }
            match this.step(Some(buf), None)? {
                // Further records already received go into the same read while a whole
                // record's plaintext fits: one write downstream for them all.
                Step::Data
                    if buf.filled().len() > before
                        && (buf.remaining() < MAX_PLAINTEXT || this.used == this.start) =>
                {
                    return Poll::Ready(Ok(()));
                }
                Step::Data | Step::Queued | Step::Written(_) => {}
                Step::PeerClosed => {}
                Step::NeedData { .. } if buf.filled().len() > before => {
                    return Poll::Ready(Ok(()));
                }
                Step::NeedData { .. } => {
                    this.read_waker = Some(cx.waker().clone());
                    match std::task::ready!(this.poll_fill(cx))? {
                        true => {}
                        // The socket ended without close_notify: the stream ends here too.
                        false => {
                            this.peer_closed = true;
                            if this.used > this.start {
                                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                            }
                        }
                    }
                }
            }
        }
    }
}

impl<C: Unbuffered> AsyncWrite for LeanTls<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // One record at most waits in the buffer: the next write first sees it out.
        std::task::ready!(this.poll_flush_out(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let had = this.plaintext.len();
            match this.step(None, Some(data))? {
                Step::Written(n) => {
                    // The record leaves now if the socket takes it, else at the next flush.
                    if let Poll::Ready(Err(e)) = this.poll_flush_out(cx) {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Ready(Ok(n));
                }
                // What a write meets on the way is the reader's: wake it.
                Step::PeerClosed => this.wake_reader(),
                Step::Data => {
                    if this.plaintext.len() > had {
                        this.wake_reader();
                    }
                }
                Step::Queued => {}
                Step::NeedData { handshaking } => {
                    return Poll::Ready(Err(io::Error::other(if handshaking {
                        "TLS handshake not complete"
                    } else {
                        "TLS connection does not take application data"
                    })));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    /// close_notify, then FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            std::task::ready!(this.poll_flush_out(cx))?;
            this.closing = true;
            let mut empty = [0u8; 0];
            let UnbufferedStatus { state, .. } = this.conn.process(&mut empty);
            if let Ok(ConnectionState::WriteTraffic(mut traffic)) = state {
                let room = this.out.room(64);
                if let Ok(n) = traffic.queue_close_notify(room) {
                    this.out.end += n;
                }
            }
        }
        std::task::ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use meshmeter_certs::rustls::{ClientConfig, ServerConfig};
    use meshmeter_certs::{
        client_config, server_config, server_name, Authority, CertStore, ExpectedPeer, SpiffeId,
        TrustBundle,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let authority =
            Authority::generate_root("cluster.local", Duration::from_secs(600)).unwrap();
        let bundle = TrustBundle::new(vec![authority.root().clone()], "root").unwrap();
        let store = |sa: &str| {
            let id = SpiffeId::new("cluster.local", "default", sa).unwrap();
            let cert = authority
                .issue_workload(&id, Duration::from_secs(600))
                .unwrap();
            Arc::new(CertStore::with(cert))
        };
        let any = || ExpectedPeer::TrustDomain("cluster.local".to_owned());
        (
            server_config(&bundle, store("mongodb"), any()).unwrap(),
            client_config(&bundle, store("ratings"), any()).unwrap(),
        )
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (c, s) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (c.unwrap(), s.unwrap().0)
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// `a` sends `n` bytes and closes; `b` reads them to the end, sends `m` back and closes;
    /// `a` reads those to the end. Returns what each read.
    async fn exchange<A, B>(mut a: A, mut b: B, n: usize, m: usize) -> (Vec<u8>, Vec<u8>, A, B)
    where
        A: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        let (to_b, to_a) = (payload(n), payload(m));
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        let a_side = async {
            a.write_all(&to_b).await.unwrap();
            a.shutdown().await.unwrap();
            a.read_to_end(&mut got_a).await.unwrap();
        };
        let b_side = async {
            b.read_to_end(&mut got_b).await.unwrap();
            b.write_all(&to_a).await.unwrap();
            b.shutdown().await.unwrap();
        };
        tokio::join!(a_side, b_side);
        assert!(
            got_b == to_b,
            "{} of {n} bytes, or different ones",
            got_b.len()
        );
        assert!(
            got_a == to_a,
            "{} of {m} bytes, or different ones",
            got_a.len()
        );
        (got_a, got_b, a, b)
    }

    #[tokio::test]
    async fn a_lean_server_talks_to_a_rustls_client_both_ways_with_half_closes() {
        let (server, client) = configs();
        let (c, s) = pair().await;
        let mut lean = LeanTls::new(s, UnbufferedServerConnection::new(server).unwrap());
        let connector = tokio_rustls::TlsConnector::from(client);
        let (tls, shaken) = tokio::join!(connector.connect(server_name(), c), lean.handshake());
        shaken.unwrap();
        let peer = meshmeter_certs::peer_identity(lean.peer_certificates()).unwrap();
        assert_eq!(peer.principal(), "cluster.local/ns/default/sa/ratings");
        let (_, _, _, lean) = exchange(tls.unwrap(), lean, 1_000_003, 70_001).await;
        // Idle again: no record buffer is held.
        assert!(lean.incoming.is_none() && lean.out.buf.is_none());
    }

    /// Records waiting together come out of one read: 2,000 records of 7 bytes (29 with the
    /// header and tag), all sent before the lean side reads. The first socket read takes a
    /// record's room (17 KiB: 600 records, 4,200 bytes), fills it, and so the next one takes
    /// the bulk size: the other 1,400 records (9,800 bytes) in one read, then the end.
    #[tokio::test]
    async fn records_received_together_are_delivered_in_one_read() {
        let (server, client) = configs();
        let (c, s) = pair().await;
        let mut lean = LeanTls::new(s, UnbufferedServerConnection::new(server).unwrap());
        let connector = tokio_rustls::TlsConnector::from(client);
        let (tls, shaken) = tokio::join!(connector.connect(server_name(), c), lean.handshake());
        shaken.unwrap();
        let mut tls = tls.unwrap();
        let sent = payload(14_000);
        for chunk in sent.chunks(7) {
            tls.write_all(chunk).await.unwrap();
        }
        tls.shutdown().await.unwrap();
        // All of it is in the lean side's socket before it reads.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut buf = vec![0; 64 * 1024];
        let (mut reads, mut got) = (Vec::new(), Vec::new());
        loop {
            let n = lean.read(&mut buf).await.unwrap();
            reads.push(n);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == sent, "{} bytes read, or different ones", got.len());
        assert_eq!(reads, [4_200, 9_800, 0]);
    }

    #[tokio::test]
    async fn a_lean_client_talks_to_a_rustls_server_both_ways_with_half_closes() {
        let (server, client) = configs();
        let (c, s) = pair().await;
        let mut lean = LeanTls::new(
            c,
            UnbufferedClientConnection::new(client, server_name()).unwrap(),
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let (shaken, tls) = tokio::join!(lean.handshake(), acceptor.accept(s));
        shaken.unwrap();
        let peer = meshmeter_certs::peer_identity(lean.peer_certificates()).unwrap();
        assert_eq!(peer.principal(), "cluster.local/ns/default/sa/mongodb");
        let (_, _, lean, _) = exchange(lean, tls.unwrap(), 65_537, 1).await;
        assert!(lean.incoming.is_none() && lean.out.buf.is_none());
    }

    #[tokio::test]
    async fn two_lean_ends_carry_bytes_resume_and_a_socket_closed_without_close_notify_ends_reads()
    {
        let (server, client) = configs();
        let (c, s) = pair().await;
        let mut a = LeanTls::new(
            c,
            UnbufferedClientConnection::new(Arc::clone(&client), server_name()).unwrap(),
        );
        let mut b = LeanTls::new(
            s,
            UnbufferedServerConnection::new(Arc::clone(&server)).unwrap(),
        );
        let (x, y) = tokio::join!(a.handshake(), b.handshake());
        x.unwrap();
        y.unwrap();
        let (_, _, a, _) = exchange(a, b, 16 * 1024 + 1, 3).await;
        assert!(a.incoming.is_none() && a.out.buf.is_none());
        assert_eq!(a.conn.handshake_kind(), Some(rustls::HandshakeKind::Full));
        // X25519, not the P-384 that ring's default order puts first (several times dearer).
        let group = a.conn.negotiated_key_exchange_group().map(|g| g.name());
        assert_eq!(group, Some(rustls::NamedGroup::X25519));
        // AES-128-GCM, as between Istio's sidecars (rustls' default order puts AES-256 first).
        let suite = a.conn.negotiated_cipher_suite().map(|s| s.suite());
        assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
        // A second pair resumes with the first one's ticket; its client's socket ends without
        // close_notify after 5 bytes: the server reads the 5 bytes, then the end.
        let (c, s) = pair().await;
        let mut a = LeanTls::new(
            c,
            UnbufferedClientConnection::new(client, server_name()).unwrap(),
        );
        let mut b = LeanTls::new(s, UnbufferedServerConnection::new(server).unwrap());
        let (x, y) = tokio::join!(a.handshake(), b.handshake());
        x.unwrap();
        y.unwrap();
        assert_eq!(
            a.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
        a.write_all(b"hello").await.unwrap();
        a.flush().await.unwrap();
        // FIN without close_notify (dropping the socket would reset it: the server's session
        // tickets are unread).
        a.tcp.shutdown().await.unwrap();
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"hello");
    }
}
