//! Reading and watching files an operator points the server at (the configuration directory,
//! the workloads file), shared so that both follow the same rules:
//!
//! - [`fsread`]: only regular files, opened without blocking, read with a bound;
//! - [`fingerprint`]: a hash of files' contents (not their mtimes: two edits within one mtime
//!   tick, or a same-size rewrite, are not missed);
//! - [`Settle`]: a change is loaded only once two consecutive polls agree on it, so a file
//!   caught mid-write (truncated, half copied) is never loaded.

#![warn(missing_docs)]

pub mod fsread;
mod settle;

pub use settle::{fingerprint, read_fingerprinted, Settle};
