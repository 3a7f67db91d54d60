//! Attributes: the typed facts a proxy reports about a connection.
//!
//! A [`Manifest`] declares attribute names and their [`ValueType`]s and gives each a dense
//! [`AttrId`]. A [`Bag`] holds one report's values indexed by those ids, so that compiled
//! expressions look attributes up by position instead of hashing names per evaluation.
//!
//! ```
//! use meshmeter_attributes::{Bag, Manifest, Value};
//!
//! let manifest = Manifest::istio();
//! let sent = manifest.id("connection.sent.bytes").unwrap();
//! let mut bag = Bag::new(&manifest);
//! bag.set(sent, Value::Int64(512));
//! assert_eq!(bag.get(sent), Some(&Value::Int64(512)));
//! ```

#![warn(missing_docs)]

mod bag;
mod duration;
pub mod json;
mod manifest;
mod string_map;
mod timestamp;
mod types;
mod value;
pub mod vocabulary;

pub use bag::{Bag, BagMark};
pub use duration::{Duration, ParseDurationError};
pub use manifest::{AttrId, Manifest, ManifestError};
pub use string_map::StringMap;
pub use timestamp::{ParseTimestampError, Timestamp};
pub use types::{UnknownType, ValueType};
pub use value::Value;
