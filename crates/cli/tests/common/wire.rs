//! A minimal blocking connection over the wire codec, for tests that must
//! see the protocol itself: logins that are refused, raw frames, and
//! unsolicited responses (topology notifications) between answers.

use joule_common::Value;
use joule_wire::frame::{payload_len, write_frame};
use joule_wire::{ClientResponse, HashScheme, Invocation, Login, LoginResponse, Param};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

pub struct WireConnection(pub TcpStream);

impl WireConnection {
    /// Log in as `user` with `password`; the login result code on refusal.
    pub fn login(to: impl ToSocketAddrs, user: &str, password: &str, scheme: HashScheme) -> Result<Self, i8> {
        use sha1::Digest;
        let password_hash = match scheme {
            HashScheme::Sha1 => sha1::Sha1::digest(password.as_bytes()).to_vec(),
            HashScheme::Sha256 => sha2::Sha256::digest(password.as_bytes()).to_vec(),
        };
        let version = if scheme == HashScheme::Sha1 { 0 } else { 1 };
        let login = Login { version, scheme, service: "database".into(), user: user.into(), password_hash };
        let s = TcpStream::connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = WireConnection(s);
        c.send(&login.encode());
        let r = LoginResponse::decode(&c.recv().unwrap()).unwrap();
        if r.result != 0 {
            // Refused logins are followed by a close.
            assert!(c.recv().is_none());
            return Err(r.result);
        }
        Ok(c)
    }

    /// Log in with no user (a server without users takes it).
    pub fn open(to: impl ToSocketAddrs) -> Self {
        let login = Login {
            version: 1,
            scheme: HashScheme::Sha256,
            service: "database".into(),
            user: String::new(),
            password_hash: vec![0; 32],
        };
        let s = TcpStream::connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = WireConnection(s);
        c.send(&login.encode());
        let r = LoginResponse::decode(&c.recv().unwrap()).unwrap();
        assert_eq!(r.result, 0);
        c
    }

    pub fn send(&mut self, payload: &[u8]) {
        let mut buf = Vec::new();
        write_frame(&mut buf, payload);
        self.0.write_all(&buf).unwrap();
    }

    /// The next frame's payload; `None` once the connection is closed.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        let mut h = [0u8; 4];
        self.0.read_exact(&mut h).ok()?;
        let n = payload_len(h, 1 << 30).unwrap();
        let mut p = vec![0u8; n];
        self.0.read_exact(&mut p).ok()?;
        Some(p)
    }

    /// The next response, solicited or not.
    pub fn receive(&mut self) -> ClientResponse {
        ClientResponse::decode(&self.recv().expect("a response within 20 s")).unwrap()
    }

    pub fn invoke(&mut self, handle: i64, procedure: &str, params: Vec<Value>) {
        let inv = Invocation {
            version: 0,
            procedure: procedure.into(),
            client_handle: handle,
            batch_timeout_ms: None,
            params: params.into_iter().map(Param::Value).collect(),
        };
        self.send(&inv.encode().unwrap());
    }

    /// Call `procedure` and wait for its answer. Topology notifications
    /// that come first are skipped; any other response is a failure.
    pub fn call(&mut self, procedure: &str, params: Vec<Value>) -> ClientResponse {
        self.invoke(99, procedure, params);
        loop {
            let r = self.receive();
            if r.client_handle != joule_wire::TOPOLOGY_HANDLE {
                assert_eq!(r.client_handle, 99);
                return r;
            }
        }
    }
}
