//! Test support: a fault-injecting TCP proxy to put on a link between two
//! members, so that tests can cut a link, hang it as a stopped process
//! would (connections stay open, nothing moves), or slow it down, and heal
//! it again.

#![allow(dead_code)]

pub mod linearizable;

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What a link does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Bytes pass.
    Up,
    /// Connections are closed and new ones closed as soon as accepted.
    Cut,
    /// Connections stay open but nothing passes (a hung host).
    Hang,
    /// Bytes pass, but what the target sends back waits this long first
    /// (a slow or distant host).
    Delay(Duration),
}

/// A proxy in front of `target`: connect to [`Proxy::address`] instead.
pub struct Proxy {
    pub address: String,
    link: watch::Sender<Link>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (link, rx) = watch::channel(Link::Up);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                if *rx.borrow() == Link::Cut {
                    continue; // dropped: closed at once
                }
                let (target, rx) = (target.clone(), rx.clone());
                connections.spawn(async move {
                    if let Ok(server) = TcpStream::connect(&target).await {
                        relay(client, server, rx).await;
                    }
                });
            }
        });
        Proxy { address, link, task }
    }

    pub fn set(&self, link: Link) {
        self.link.send_replace(link);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copy both ways while the link is up; hold while it hangs; close when
/// it is cut.
async fn relay(a: TcpStream, b: TcpStream, mut link: watch::Receiver<Link>) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let (mut ar, mut aw) = a.into_split();
    let (mut br, mut bw) = b.into_split();
    let (mut abuf, mut bbuf) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let state = *link.borrow_and_update();
        let delay = match state {
            Link::Cut => return,
            Link::Hang => {
                if link.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Link::Up => None,
            Link::Delay(d) => Some(d),
        };
        tokio::select! {
            _ = link.changed() => continue,
            n = ar.read(&mut abuf) => match n {
                Ok(n) if n > 0 => if bw.write_all(&abuf[..n]).await.is_err() { return },
                _ => return,
            },
            n = br.read(&mut bbuf) => match n {
                Ok(n) if n > 0 => {
                    if let Some(d) = delay {
                        tokio::time::sleep(d).await;
                    }
                    if aw.write_all(&bbuf[..n]).await.is_err() { return }
                }
                _ => return,
            },
        }
    }
}

/// Poll `done` every 20 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}
