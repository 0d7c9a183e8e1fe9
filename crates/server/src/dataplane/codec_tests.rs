//! The data plane's encodings against the ones they replaced: bytes that
//! go in one piece (`serde_bytes`) must encode exactly as postcard wrote
//! them byte by byte, so copy logs and peers of either build read alike.

use super::replication::Batch;
use joule_cluster::HostId;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

/// A batch as it was encoded before its records went as bytes in one
/// piece (`serde_bytes`): a plain `Vec<u8>`, byte by byte.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct PlainBatch {
    partition: u32,
    stream: u64,
    sequence: u64,
    copy: bool,
    from: HostId,
    term: u64,
    records: Vec<u8>,
}

/// `Value` as it was encoded before `Binary` went in one piece.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
enum PlainValue {
    Null,
    Boolean(bool),
    Integer(i64),
    Float(f64),
    Decimal(joule_common::Decimal),
    String(String),
    Binary(Vec<u8>),
}

proptest! {
    /// Bytes in one piece encode exactly as they did byte by byte, so
    /// copy logs and peers of either build read each other's frames.
    #[test]
    fn records_and_binary_values_encode_as_they_did_byte_by_byte(
        records in proptest::collection::vec(any::<u8>(), 0..20_000),
        position in any::<(u64, u64, u64)>(),
    ) {
        let (stream, sequence, term) = position;
        let batch = Batch { partition: 5, stream, sequence, copy: true, from: 9, term, records: records.clone() };
        let plain = PlainBatch { partition: 5, stream, sequence, copy: true, from: 9, term, records: records.clone() };
        let bytes = postcard::to_stdvec(&batch).unwrap();
        prop_assert_eq!(&bytes, &postcard::to_stdvec(&plain).unwrap());
        prop_assert_eq!(postcard::from_bytes::<PlainBatch>(&bytes).unwrap(), plain);
        let back = postcard::from_bytes::<Batch>(&bytes).unwrap();
        prop_assert_eq!(&back.records, &records);
        prop_assert_eq!(back.position(), (term, sequence));

        let value = joule_common::Value::Binary(records.clone());
        let bytes = postcard::to_stdvec(&value).unwrap();
        prop_assert_eq!(&bytes, &postcard::to_stdvec(&PlainValue::Binary(records.clone())).unwrap());
        prop_assert!(matches!(postcard::from_bytes::<joule_common::Value>(&bytes).unwrap(), joule_common::Value::Binary(b) if b == records));
    }
}
