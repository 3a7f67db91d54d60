//! A bounded HTTP/1.1 GET over a fresh connection: enough to scrape `/metrics` and query
//! Prometheus' API on loopback, for the demo, the load generator and tests.
//!
//! hyper does the HTTP (framing, chunked bodies); this crate adds the bounds a scrape of a
//! local process needs: one deadline for the whole exchange and a cap on the body size. The
//! body must be UTF-8: a scrape that is not is an error, never silently repaired.
//!
//! ```no_run
//! # async fn scrape(addr: std::net::SocketAddr) -> Result<(), meshmeter_httpget::GetError> {
//! let (status, body) = meshmeter_httpget::http_get(addr, "/metrics").await?;
//! assert_eq!(status, 200);
//! # let _ = body;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long a whole GET (connect, request, response body) may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The largest response body accepted.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// Why a GET failed; every variant names the URL.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// The TCP connection could not be made.
    #[error("GET {url}: cannot connect: {source}")]
    Connect {
        /// `http://addr/path`.
        url: String,
        /// Why.
        source: std::io::Error,
    },
    /// The request could not be built (the path is not a valid request target).
    #[error("GET {url}: invalid request: {source}")]
    Request {
        /// `http://addr/path`.
        url: String,
        /// Why.
        source: hyper::http::Error,
    },
    /// The HTTP exchange failed (closed early, malformed response).
    #[error("GET {url}: {source}")]
    Http {
        /// `http://addr/path`.
        url: String,
        /// Why.
        source: hyper::Error,
    },
    /// The response body was over [`MAX_BODY_BYTES`] or could not be read.
    #[error("GET {url}: reading the body: {reason}")]
    Body {
        /// `http://addr/path`.
        url: String,
        /// Why (including the size limit).
        reason: String,
    },
    /// The body is not UTF-8.
    #[error("GET {url}: the body is not UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 {
        /// `http://addr/path`.
        url: String,
        /// Where the first invalid byte is.
        offset: usize,
    },
    /// The exchange did not finish within [`TIMEOUT`].
    #[error("GET {url}: timed out after {TIMEOUT:?}")]
    Timeout {
        /// `http://addr/path`.
        url: String,
    },
}

/// GETs `path` from `addr`; returns the status and the body. Bounded by [`TIMEOUT`] and
/// [`MAX_BODY_BYTES`].
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), GetError> {
    let url = format!("http://{addr}{path}");
    match tokio::time::timeout(TIMEOUT, exchange(addr, path, &url)).await {
        Ok(result) => result,
        Err(_) => Err(GetError::Timeout { url }),
    }
}

async fn exchange(addr: SocketAddr, path: &str, url: &str) -> Result<(u16, String), GetError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| GetError::Connect {
            url: url.to_owned(),
            source,
        })?;
    let http = |source| GetError::Http {
        url: url.to_owned(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    // The connection is driven beside the request and ends with it (the request says close).
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|source| GetError::Request {
            url: url.to_owned(),
            source,
        })?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| GetError::Body {
            url: url.to_owned(),
            reason: e.to_string(),
        })?
        .to_bytes();
    driver.abort();
    let body = String::from_utf8(Vec::from(body)).map_err(|e| GetError::NotUtf8 {
        url: url.to_owned(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that answers one connection with `response`, whatever the request.
    async fn answer(response: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "request head incomplete");
                head.extend_from_slice(&buf[..n]);
            }
            socket.write_all(response).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn plain_and_chunked_bodies() {
        let addr = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        assert_eq!(http_get(addr, "/").await.unwrap(), (200, "ok".into()));
        let addr = answer(
            b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(http_get(addr, "/").await.unwrap(), (503, "abcde".into()));
    }

    #[tokio::test]
    async fn multibyte_text_split_across_chunks_is_kept_whole() {
        // "é" is two bytes, one in each chunk: decoding per chunk would mangle it.
        let addr = answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\na\xc3\r\n2\r\n\xa9b\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(http_get(addr, "/").await.unwrap(), (200, "a\u{e9}b".into()));
    }

    #[tokio::test]
    async fn invalid_utf8_and_garbage_are_errors() {
        let addr = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\na\xffb").await;
        let err = http_get(addr, "/x").await.unwrap_err();
        assert!(matches!(err, GetError::NotUtf8 { offset: 1, .. }), "{err}");
        assert!(err
            .to_string()
            .starts_with(&format!("GET http://{addr}/x: ")));
        let addr = answer(b"garbage").await;
        assert!(matches!(
            http_get(addr, "/").await.unwrap_err(),
            GetError::Http { .. }
        ));
    }
}
