//! A TCP proxy that delays every byte by a fixed time in each direction: "a slow etcd" for the
//! fault tests, on machines whose kernel has no netem qdisc (and nftables cannot delay).
//!
//! Bytes keep their order and their chunks: each direction is a reader that stamps what it reads
//! and a writer that sends it once `delay` has passed since it arrived, so a stream of small
//! writes (HTTP/2 frames of a gRPC watch) is late by `delay`, not by `delay` per frame. The
//! listener and the upstream connections are made in `netns` (a thread joins it), so nodes reach
//! the proxy where they reached etcd. Plain threads: a handful of connections, no runtime needed.
//!
//! Written here because no maintained crate offers a delaying TCP relay for tests (toxiproxy is
//! a Go service; the Rust relays forward at once).
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

/// A running proxy; dropping it stops accepting (open connections end with their peers).
#[derive(Debug)]
pub struct DelayProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl DelayProxy {
    /// Listens on `listen`:random port (inside `netns` when given) and relays every connection to
    /// `upstream`, each direction late by `delay`.
    pub fn start(
        netns: Option<&str>,
        listen: IpAddr,
        upstream: SocketAddr,
        delay: Duration,
    ) -> Result<DelayProxy> {
        let (tx, rx) = mpsc::channel();
        let ns = netns.map(str::to_owned);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::Builder::new()
            .name("delay-proxy".into())
            .spawn(move || {
                let bound = (|| -> Result<TcpListener> {
                    if let Some(ns) = &ns {
                        let f = std::fs::File::open(format!("/run/netns/{ns}"))
                            .with_context(|| format!("open netns {ns}"))?;
                        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                            .with_context(|| format!("setns {ns}"))?;
                    }
                    TcpListener::bind((listen, 0)).with_context(|| format!("bind {listen}:0"))
                })();
                let listener = match bound {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(listener.local_addr().context("local_addr"));
                for conn in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = conn else { continue };
                    // Connected from this thread, so in the namespace too.
                    match TcpStream::connect(upstream) {
                        Ok(server) => relay(client, server, delay),
                        Err(e) => {
                            tracing::warn!("delay proxy: connect {upstream}: {e}");
                            let _ = client.shutdown(Shutdown::Both);
                        }
                    }
                }
            })
            .context("spawn the proxy thread")?;
        let addr = rx
            .recv_timeout(Duration::from_secs(5))
            .context("the proxy thread did not report its address")??;
        Ok(DelayProxy { addr, stop })
    }

    /// Where clients connect (`ip:port`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag (a failure means it is gone already).
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Relays both directions of one connection, each late by `delay`.
fn relay(client: TcpStream, server: TcpStream, delay: Duration) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let pairs = [
        (client.try_clone(), server.try_clone()),
        (server.try_clone(), client.try_clone()),
    ];
    for (from, to) in pairs {
        if let (Ok(from), Ok(to)) = (from, to) {
            pump(from, to, delay);
        }
    }
}

/// One direction: a reader stamping chunks, a writer sending each at its time.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // Dropping tx ends the writer once it has sent what is queued.
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_in_order_and_late_by_the_delay_each_way() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut buf = [0u8; 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => s.write_all(&buf[..n]).unwrap(),
                }
            }
        });
        let delay = Duration::from_millis(100);
        let proxy = DelayProxy::start(None, "127.0.0.1".parse().unwrap(), upstream, delay).unwrap();
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_nodelay(true).unwrap();
        let sent = Instant::now();
        for i in 0..5u8 {
            c.write_all(&[i; 10]).unwrap();
        }
        let mut got = vec![0u8; 50];
        c.read_exact(&mut got).unwrap();
        let rtt = sent.elapsed();
        let want: Vec<u8> = (0..5u8).flat_map(|i| [i; 10]).collect();
        assert_eq!(got, want, "order kept");
        assert!(rtt >= 2 * delay, "round trip {rtt:?} under twice the delay");
        assert!(
            rtt < 2 * delay + Duration::from_millis(400),
            "round trip {rtt:?}"
        );
    }
}
