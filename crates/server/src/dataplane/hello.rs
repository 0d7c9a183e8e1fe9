//! How a data-plane connection opens, and why hosts of different builds
//! refuse each other.
//!
//! The connecting host sends [`DATA_MAGIC`], one byte saying what the
//! connection carries (see the parent module) and the version of the data
//! plane's messages it speaks (`u16` LE: [`DATA_PROTOCOL`], which lives in
//! `joule-cluster` because join and admission requests carry it too, so
//! that a host of another build is refused before it becomes a member;
//! `data_protocol()` gives it, the next one with the failpoint
//! `data-protocol-next` armed). The serving host answers with its own
//! version (`u16` LE) at once, before it reads anything else, and serves
//! the connection only when the two agree; otherwise it says why on
//! standard error (at most once every 10 s) and closes. The connecting
//! host sends its first request only after reading the answer, so a
//! request never reaches a host that would read it differently. Opening a
//! connection therefore waits for that answer, 2 s at most
//! ([`CONNECT_TIMEOUT`]): a host whose process hangs while its kernel
//! still accepts connections costs the opener those 2 s.
//!
//! Why a version at all: the data plane's frames are postcard, which
//! carries no field names or variant names, only positions. A message a
//! newer build adds — a new request, a new kind of replicated record — is
//! garbage to an older build, and one it misreads as something else could
//! change data. So a host of another version is refused at the first
//! connection between them, and the host that connected gets
//! `ProtocolError` naming both versions: the operator learns that every
//! host must run the same build, rather than finding ranges that fail to
//! move or copies that stop. Upgrading means stopping the whole cluster
//! and starting it on the new build, not host by host; so a build that
//! raises [`DATA_PROTOCOL`] must still read the copy logs and snapshots of
//! the build before it (records are added as new last variants).
//!
//! Builds from before the version carried another magic, which the
//! internal port's server recognises and refuses (`joule-cluster`'s
//! `network.rs`); to such a build this magic reads as a metadata frame
//! far past its size limit, and it closes the connection.
//!
//! [`CONNECT_TIMEOUT`]: super::CONNECT_TIMEOUT
//! [`DATA_PROTOCOL`]: joule_cluster::network::DATA_PROTOCOL

use joule_cluster::network::DATA_MAGIC;
use joule_common::{bail, Result};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a host speaking `ours` sends first on a connection of `kind`.
pub(super) fn hello(kind: u8, ours: u16) -> [u8; 7] {
    let [m0, m1, m2, m3] = DATA_MAGIC;
    let [v0, v1] = ours.to_le_bytes();
    [m0, m1, m2, m3, kind, v0, v1]
}

/// Check the serving host's answer to [`hello`]: `Ok` when it speaks
/// `ours`.
pub(super) fn check_answer(address: &str, answer: [u8; 2], ours: u16) -> Result<()> {
    let theirs = u16::from_le_bytes(answer);
    if theirs != ours {
        bail!(
            ProtocolError,
            "the host at {address} speaks data-plane protocol {theirs} and this host {ours}: every host of a \
             cluster must run the same JouleDB build (upgrade by restarting the whole cluster on the new one)"
        );
    }
    Ok(())
}

/// Whether a connecting host that sent `version` may be served by a host
/// speaking `ours`; why not, for the log.
pub(super) fn accept(
    version: [u8; 2],
    peer: Option<std::net::SocketAddr>,
    ours: u16,
) -> std::result::Result<(), String> {
    let theirs = u16::from_le_bytes(version);
    if theirs == ours {
        return Ok(());
    }
    let from = peer.map_or_else(|| "a host".to_string(), |p| format!("{p}"));
    Err(format!(
        "refused a data-plane connection from {from}: it speaks protocol {theirs} and this host {ours}; every host \
         of a cluster must run the same JouleDB build"
    ))
}

/// Say a mismatch of versions — this host's refusal, or another host's
/// `ProtocolError` met where nobody else reports it — on standard error, at
/// most once every 10 s (a host of another build retries its connections:
/// once is enough to be seen), with how many went unsaid since.
pub(super) fn log_mismatch(what: &str) {
    static SAID: Mutex<Option<(Instant, u64)>> = Mutex::new(None);
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    match &mut *said {
        Some((at, unsaid)) if at.elapsed() < Duration::from_secs(10) => *unsaid += 1,
        _ => {
            let unsaid = said.map_or(0, |(_, n)| n);
            let more = if unsaid > 0 { format!(" ({unsaid} more since the last message)") } else { String::new() };
            eprintln!("joule: cluster: {what}{more}");
            *said = Some((Instant::now(), 0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use joule_common::ErrorCode;
    const PROTOCOL: u16 = joule_cluster::network::DATA_PROTOCOL;

    #[test]
    fn hello_carries_the_magic_the_kind_and_the_version() {
        let h = hello(b'L', PROTOCOL);
        assert_eq!(h[..4], DATA_MAGIC);
        assert_eq!(h[4], b'L');
        assert_eq!(u16::from_le_bytes([h[5], h[6]]), PROTOCOL);
    }

    #[test]
    fn another_version_is_refused_on_both_ends_with_both_versions_named() {
        assert!(check_answer("h:1", PROTOCOL.to_le_bytes(), PROTOCOL).is_ok());
        let e = check_answer("h:1", (PROTOCOL + 1).to_le_bytes(), PROTOCOL).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ProtocolError);
        assert!(e.message().contains(&format!("protocol {} and this host {PROTOCOL}", PROTOCOL + 1)), "{e}");
        assert!(accept(PROTOCOL.to_le_bytes(), None, PROTOCOL).is_ok());
        let w = accept([0x10, 0x00], None, PROTOCOL).unwrap_err();
        assert!(w.contains(&format!("protocol 16 and this host {PROTOCOL}")), "{w}");
    }
}
