//! Zero-copy forwarding with `splice(2)`: socket -> pipe -> socket, the payload never copied
//! into user space. Readiness comes from tokio's reactor (`try_io`), so a blocked splice
//! parks the task exactly like a blocked read would.

use std::io;
use std::os::fd::OwnedFd;

use nix::fcntl::{splice, SpliceFFlags};
use tokio::io::Interest;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use crate::forward::{
    pool, pump_copy, read_once, read_ready, shutdown_write, write_all, write_ready, PumpError,
};

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// The chunk size it was made for (only reused for the same).
    size: usize,
}

/// Empty pipes kept per worker thread for reuse: a connection holds a pipe only while bytes
/// flow, so idle connections cost two descriptors (their sockets), not six.
const POOLED_PIPES: usize = 64;

thread_local! {
    static PIPES: std::cell::RefCell<Vec<Pipe>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A pipe for `size`-byte chunks: a pooled one when there is one.
fn take_pipe(size: usize) -> io::Result<Pipe> {
    match PIPES.with(|pool| pool.borrow_mut().pop()) {
        Some(p) if p.size == size => Ok(p),
        _ => Pipe::new(size),
    }
}

/// Returns an empty pipe to this thread's pool (or closes it when the pool is full).
fn give_pipe(pipe: Pipe) {
    PIPES.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOLED_PIPES {
            pool.push(pipe);
        }
    });
}

impl Pipe {
    /// A pipe holding up to `size` bytes when the kernel allows (pipes default to 64 KiB;
    /// larger ones move bulk data in fewer calls). Pages are only pinned while data sits in the
    /// pipe, and it is drained before each refill.
    fn new(size: usize) -> io::Result<Pipe> {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)?;
        if size > 64 * 1024 {
            let size = i32::try_from(size).unwrap_or(i32::MAX);
            // Beyond /proc/sys/fs/pipe-max-size this fails; the default size still works.
            let _ = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETPIPE_SZ(size));
        }
        Ok(Pipe { read, write, size })
    }
}

fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// A splice that moves less than this means the stream is no longer a bulk transfer: small
/// messages go back to the copy path.
const BULK_SPLICE: usize = 16 * 1024;

/// One direction of forwarding, adaptive: small messages (request/response traffic) are
/// copied through a pooled buffer, one read and one write, which is cheaper than two splices
/// through a pipe; once a read fills the whole buffer the stream is a bulk transfer and moves
/// through a pipe with `splice`, the payload never entering user space, until a splice moves
/// less than [`BULK_SPLICE`].
///
/// The pipe is taken when data is ready and given back once the socket has nothing more (an
/// idle connection holds none); it is always drained before the next splice in, so an
/// `EAGAIN` on the way in can only mean "the socket has nothing", never "the pipe is full".
pub(crate) async fn pump_splice(
    mut src_half: ReadHalf<'_>,
    dst_half: WriteHalf<'_>,
    chunk_size: usize,
    count: impl Fn(u64),
) -> Result<(), PumpError> {
    let mut pipe: Option<Pipe> = None;
    let mut bulk = false;
    let mut buf: Option<Box<[u8]>> = None;
    let give_buf = |buf: &mut Option<Box<[u8]>>| {
        if let Some(b) = buf.take() {
            pool::give(b);
        }
    };
    loop {
        read_ready(src_half.as_ref())
            .await
            .map_err(PumpError::Read)?;
        if !bulk {
            let chunk = buf.get_or_insert_with(|| pool::take(chunk_size.max(1)));
            match read_once(&mut src_half, chunk).await {
                Ok(0) => {
                    give_buf(&mut buf);
                    return shutdown_write(dst_half.as_ref());
                }
                Ok(n) => {
                    let full = n == chunk.len();
                    let written = write_all(dst_half.as_ref(), &chunk[..n], &count).await;
                    // Either way the buffer goes back: a full read turns the stream into a bulk
                    // transfer (spliced), a short one emptied the socket, which now waits idle.
                    give_buf(&mut buf);
                    bulk = full;
                    written?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => give_buf(&mut buf),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    give_buf(&mut buf);
                    return Err(PumpError::Read(e));
                }
            }
            continue;
        }
        let p = match &pipe {
            Some(p) => p,
            None => match take_pipe(chunk_size) {
                Ok(p) => pipe.insert(p),
                // Out of descriptors: a pipe costs two, a buffer none, so keep forwarding
                // through user space rather than fail the connection.
                Err(error) => {
                    tracing::debug!(%error, "no pipe for splice: copying instead");
                    return pump_copy(src_half, dst_half, chunk_size, count).await;
                }
            },
        };
        let src = src_half.as_ref();
        let moved = src.try_io(Interest::READABLE, || {
            splice(src, None, &p.write, None, chunk_size.max(1), flags()).map_err(io::Error::from)
        });
        let mut pending = match moved {
            Ok(0) => {
                if let Some(p) = pipe.take() {
                    give_pipe(p);
                }
                return shutdown_write(dst_half.as_ref());
            }
            Ok(n) => {
                if n < BULK_SPLICE {
                    bulk = false;
                }
                n
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Drained: the pipe is empty, let an active connection use it meanwhile.
                if let Some(p) = pipe.take() {
                    give_pipe(p);
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PumpError::Read(e)),
        };
        while pending > 0 {
            let dst = dst_half.as_ref();
            let out = dst.try_io(Interest::WRITABLE, || {
                splice(&p.read, None, dst, None, pending, flags()).map_err(io::Error::from)
            });
            match out {
                Ok(0) => {
                    return Err(PumpError::Write(io::Error::from(io::ErrorKind::WriteZero)));
                }
                Ok(n) => {
                    count(n as u64);
                    pending -= n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    write_ready(dst).await.map_err(PumpError::Write)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(PumpError::Write(e)),
            }
        }
        if !bulk {
            // Back to copying: the drained pipe can serve another connection.
            if let Some(p) = pipe.take() {
                give_pipe(p);
            }
        }
    }
}
