//! The wire codec against byte layouts written out by hand from VoltDB's
//! client protocol, round trips of every type, and decoders fed garbage.

use joule_common::{Decimal, ErrorCode, Value};
use joule_wire::buf::Reader;
use joule_wire::messages::{login_result, write_table};
use joule_wire::types::{read_value, write_value};
use joule_wire::{ClientResponse, HashScheme, Invocation, Login, LoginResponse, Param, VoltTable, VoltType};
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn login_v1_sha256_layout() {
    let hash: Vec<u8> = (0..32).collect();
    let mut bytes = hex("01 01 00000008 6461746162617365 00000005 616c696365");
    bytes.extend(&hash);
    let login = Login::decode(&bytes).unwrap();
    assert_eq!(
        login,
        Login {
            version: 1,
            scheme: HashScheme::Sha256,
            service: "database".into(),
            user: "alice".into(),
            password_hash: hash
        }
    );
    assert_eq!(login.encode(), bytes);
    // Version 0 with a 20-byte SHA-1 hash.
    let mut v0 = hex("00 00 00000008 6461746162617365 00000000");
    v0.extend([7u8; 20]);
    let login = Login::decode(&v0).unwrap();
    assert_eq!((login.scheme, login.user.as_str(), login.password_hash.len()), (HashScheme::Sha1, "", 20));
    // Wrong hash length, unknown version or scheme: protocol errors.
    for bad in [&v0[..v0.len() - 1], &[&v0[..], &[0u8]].concat(), &hex("05 00"), &hex("01 07 00000000")] {
        assert_eq!(Login::decode(bad).unwrap_err().code(), ErrorCode::ProtocolError);
    }
}

#[test]
fn login_response_layout() {
    let r = LoginResponse {
        version: 0,
        result: login_result::SUCCESS,
        host_id: 0,
        connection_id: 42,
        cluster_start_millis: 1_700_000_000_000,
        leader_ipv4: 0x7f00_0001,
        build: "joule".into(),
    };
    let bytes = r.encode();
    assert_eq!(bytes, hex("00 00 00000000 000000000000002a 0000018bcfe56800 7f000001 00000005 6a6f756c65"));
    assert_eq!(LoginResponse::decode(&bytes).unwrap(), r);
    let failed = LoginResponse { result: login_result::AUTHENTICATION_FAILED, ..r };
    assert_eq!(failed.encode(), hex("00 ff"));
}

#[test]
fn invocation_v0_layout_with_every_scalar_type() {
    // As VoltDB's Python client writes it: version 0, name, handle, params.
    let bytes = hex("00 00000004 566f7465 0000000000000007 000b
         06 000000014b22f731
         05 80000000
         03 fd
         04 7fff
         08 3ff8000000000000
         09 00000002 6869
         09 ffffffff
         01
         0b 0000000000000064
         16 000000000000000000000000ee6b2800
         19 00000002 cafe");
    let inv = Invocation::decode(&bytes).unwrap();
    assert_eq!((inv.version, inv.procedure.as_str(), inv.client_handle, inv.batch_timeout_ms), (0, "Vote", 7, None));
    let v = |x| Param::Value(x);
    assert_eq!(
        inv.params,
        vec![
            v(Value::Integer(5_555_550_001)),
            v(Value::Null),
            v(Value::Integer(-3)),
            v(Value::Integer(32767)),
            v(Value::Float(1.5)),
            v(Value::String("hi".into())),
            v(Value::Null),
            v(Value::Null),
            v(Value::Timestamp(100)),
            v(Value::Decimal(Decimal::from_units(4_000_000_000).unwrap())),
            v(Value::Binary(vec![0xca, 0xfe])),
        ]
    );
}

#[test]
fn invocation_versions_1_and_2_and_arrays() {
    // v1 with a batch timeout of 500 ms, an INTEGER array and a byte array.
    let v1 = hex("01 01 000001f4 00000001 70 0000000000000001 0002
         9d 05 0003 00000001 00000002 80000000
         9d 03 00000003 010203");
    let inv = Invocation::decode(&v1).unwrap();
    assert_eq!((inv.version, inv.batch_timeout_ms), (1, Some(500)));
    assert_eq!(
        inv.params,
        vec![
            Param::Array(VoltType::Integer, vec![Value::Integer(1), Value::Integer(2), Value::Null]),
            Param::Value(Value::Binary(vec![1, 2, 3])),
        ]
    );
    // A `Value::Array` is sent as an array of its first non-NULL element's
    // type; nested arrays and mixed kinds are refused.
    let mut out = Vec::new();
    let strings = Value::Array(vec![Value::Null, Value::String("ab".into())].into());
    joule_wire::types::write_param(&mut out, &Param::Value(strings)).unwrap();
    assert_eq!(out, hex("9d 09 0002 ffffffff 00000002 6162"));
    let nested = Value::Array(vec![Value::Array(vec![].into())].into());
    assert!(joule_wire::types::write_param(&mut Vec::new(), &Param::Value(nested)).is_err());
    let mixed = Value::Array(vec![Value::Integer(1), Value::String("x".into())].into());
    assert!(joule_wire::types::write_param(&mut Vec::new(), &Param::Value(mixed)).is_err());
    // v2: a batch-timeout extension and an unknown 4-byte one, skipped.
    let v2 = hex("02 00000001 70 0000000000000009 02 01 03 00000064 2a 03 deadbeef 0000");
    let inv = Invocation::decode(&v2).unwrap();
    assert_eq!((inv.version, inv.client_handle, inv.batch_timeout_ms, inv.params.len()), (2, 9, Some(100), 0));
    // Unknown versions, missing names, truncation, trailing bytes.
    for bad in [
        hex("03 00000001 70 0000000000000001 0000"),
        hex("00 00000000 0000000000000001 0000"),
        hex("00 ffffffff 0000000000000001 0000"),
        hex("00 00000001 70 00000000000000"),
        hex("00 00000001 70 0000000000000001 0000 00"),
        hex("02 00000001 70 0000000000000001 1f"),
        hex("02 00000001 70 0000000000000001 01 01 30"),
        hex("00 00000001 70 0000000000000001 0001 07 00"),
        hex("00 00000001 70 0000000000000001 ffff"),
        hex("00 00000001 70 0000000000000001 0001 09 00000002 ff fe"),
    ] {
        assert_eq!(Invocation::decode(&bad).unwrap_err().code(), ErrorCode::ProtocolError, "{bad:02x?}");
    }
}

#[test]
fn response_layout() {
    let mut payload = Vec::new();
    let header = joule_wire::messages::ResponseHeader {
        client_handle: 7,
        status: 1,
        status_string: None,
        app_status: -128,
        app_status_string: None,
        cluster_round_trip_ms: 3,
    };
    header.write(&mut payload, 1).unwrap();
    write_table(
        &mut payload,
        &[("ID", VoltType::BigInt), ("NAME", VoltType::String)],
        &[vec![Value::Integer(1), Value::String("a".into())], vec![Value::Null, Value::Null]],
    )
    .unwrap();
    let expected = hex("00 0000000000000007 00 01 80 00000003 0001
         0000003c
           00000013 80 0002 06 09 00000002 4944 00000004 4e414d45
           00000002
           0000000d 0000000000000001 00000001 61
           0000000c 8000000000000000 ffffffff");
    assert_eq!(payload, expected);
    let r = ClientResponse::decode(&payload).unwrap();
    assert_eq!(r.tables[0].rows[1], vec![Value::Null, Value::Null]);
    assert_eq!(r.encode().unwrap(), payload);
    // Status strings and app status strings set their flag bits.
    let r = ClientResponse {
        client_handle: -1,
        status: -2,
        status_string: Some("bad".into()),
        app_status: 3,
        app_status_string: Some("x".into()),
        cluster_round_trip_ms: 0,
        tables: vec![],
    };
    let bytes = r.encode().unwrap();
    assert_eq!(&bytes[..11], &hex("00 ffffffffffffffff a0 fe")[..]);
    assert_eq!(ClientResponse::decode(&bytes).unwrap(), r);
}

#[test]
fn cells_convert_or_refuse() {
    let mut out = Vec::new();
    write_value(&mut out, VoltType::Float, &Value::Integer(2)).unwrap();
    assert_eq!(read_value(&mut Reader::new(&out), VoltType::Float).unwrap(), Value::Float(2.0));
    let mut out = Vec::new();
    assert_eq!(
        write_value(&mut out, VoltType::TinyInt, &Value::Integer(300)).unwrap_err().code(),
        ErrorCode::NumericOutOfRange
    );
    assert_eq!(
        write_value(&mut out, VoltType::BigInt, &Value::Integer(i64::MIN)).unwrap_err().code(),
        ErrorCode::NumericOutOfRange
    );
    let mut out = Vec::new();
    write_value(&mut out, VoltType::TinyInt, &Value::Boolean(true)).unwrap();
    assert_eq!(out, vec![1]);
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (-i64::MAX..=i64::MAX).prop_map(Value::Integer),
        (-1e300f64..1e300).prop_map(Value::Float),
        "\\PC{0,12}".prop_map(Value::String),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(Value::Binary),
        (i64::MIN + 1..i64::MAX).prop_map(Value::Timestamp),
        (-(10i128.pow(37))..10i128.pow(37)).prop_map(|u| Value::Decimal(Decimal::from_units(u).unwrap())),
    ]
}

fn param() -> impl Strategy<Value = Param> {
    prop_oneof![
        4 => value().prop_map(Param::Value),
        1 => prop::collection::vec(prop_oneof![Just(Value::Null), (-i64::MAX..=i64::MAX).prop_map(Value::Integer)], 0..5)
            .prop_map(|v| Param::Array(VoltType::BigInt, v)),
        1 => prop::collection::vec("[a-z]{0,4}".prop_map(Value::String), 0..5).prop_map(|v| Param::Array(VoltType::String, v)),
    ]
}

/// Cases per property: 2000 in CI; `JOULE_FUZZ_CASES` for a longer fuzz.
fn cases() -> u32 {
    std::env::var("JOULE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn invocations_round_trip(name in "[A-Za-z@.]{1,20}", handle in any::<i64>(), timeout in prop::option::of(0i32..100_000),
                              params in prop::collection::vec(param(), 0..8)) {
        let inv = Invocation { version: if timeout.is_some() { 1 } else { 0 }, procedure: name, client_handle: handle, batch_timeout_ms: timeout, params };
        let mut encoded = inv.encode().unwrap();
        let decoded = Invocation::decode(&encoded).unwrap();
        prop_assert_eq!(&decoded, &inv);
        // The handle sits where handle_offset says: patching it there is
        // the same invocation under another handle.
        let at = inv.handle_offset();
        encoded[at..at + 8].copy_from_slice(&handle.wrapping_add(1).to_be_bytes());
        let patched = Invocation::decode(&encoded).unwrap();
        prop_assert_eq!(patched, Invocation { client_handle: handle.wrapping_add(1), ..inv });
    }

    #[test]
    fn tables_round_trip(rows in prop::collection::vec((any::<i32>(), "\\PC{0,8}", prop::option::of(-1e10f64..1e10)), 0..10)) {
        let table = VoltTable {
            columns: vec![("A".into(), VoltType::Integer), ("B".into(), VoltType::String), ("C".into(), VoltType::Float)],
            rows: rows.into_iter().map(|(a, b, c)| vec![
                if a == i32::MIN { Value::Null } else { Value::Integer(a.into()) },
                Value::String(b),
                c.map_or(Value::Null, Value::Float),
            ]).collect(),
        };
        let r = ClientResponse { client_handle: 1, status: 1, status_string: None, app_status: -128, app_status_string: None, cluster_round_trip_ms: 0, tables: vec![table] };
        prop_assert_eq!(ClientResponse::decode(&r.encode().unwrap()).unwrap(), r);
    }

    /// Garbage never panics any decoder.
    #[test]
    fn decoders_survive_garbage(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Invocation::decode(&bytes);
        let _ = Login::decode(&bytes);
        let _ = LoginResponse::decode(&bytes);
        let _ = ClientResponse::decode(&bytes);
        let _ = joule_wire::frame::next_frame(&bytes, 1 << 20);
    }

    /// Valid messages with bytes changed or cut never panic either, and a
    /// cut message is always refused.
    #[test]
    fn decoders_survive_corruption(params in prop::collection::vec(param(), 0..6), at in any::<prop::sample::Index>(),
                                   byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let inv = Invocation { version: 0, procedure: "P".into(), client_handle: 3, batch_timeout_ms: None, params };
        let mut bytes = inv.encode().unwrap();
        let cut_at = cut.index(bytes.len());
        prop_assert!(Invocation::decode(&bytes[..cut_at]).is_err());
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let _ = Invocation::decode(&bytes);
    }
}
