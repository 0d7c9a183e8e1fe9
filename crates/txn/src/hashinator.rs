//! The hashinator — which partition owns a partition key — lives in
//! `joule-common` (clients route with it too); re-exported here, where the
//! transaction layer's code has always found it.

pub use joule_common::hashinator::*;
