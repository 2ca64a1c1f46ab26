//! Shared helpers of the etcd integration tests: a real etcd per test, registries and managers
//! on it, a pausable TCP proxy (to cut a client off while etcd keeps running), polling.
#![allow(dead_code)]

pub mod certs;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use net_conf::{LeaseAttrs, NetConf, SubnetKey};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use weft::lease::etcd::manager::{LeaseTiming, SubnetManager, WatchEvent};
use weft::lease::etcd::registry::{EtcdOptions, Registry};
use weft_testkit::etcd_server::{EtcdServer, EtcdServerOpts};

pub const PREFIX: &str = "/coreos.com/network";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn start_etcd() -> EtcdServer {
    init_tracing();
    EtcdServer::start(EtcdServerOpts::default()).expect("start etcd")
}

pub fn conf(text: &str) -> NetConf {
    NetConf::parse(text).expect("valid config").conf
}

pub fn host_gw_conf() -> NetConf {
    conf(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#)
}

pub fn attrs(ip: Ipv4Addr) -> LeaseAttrs {
    LeaseAttrs::host_gw(ip)
}

pub fn node_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, n)
}

pub fn key(s: &str) -> SubnetKey {
    s.parse().expect("valid subnet key")
}

pub fn net(s: &str) -> Ipv4Net {
    s.parse().expect("valid net")
}

pub async fn registry(endpoint: &str) -> Registry {
    Registry::connect(&EtcdOptions::new(vec![endpoint.to_string()]))
        .await
        .expect("connect registry")
}

pub async fn manager(endpoint: &str, timing: LeaseTiming) -> SubnetManager {
    SubnetManager::new(registry(endpoint).await, timing)
}

/// Polls `f` every 20 ms until it returns Some, or panics after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next event, or panic after `secs`.
pub async fn next_event(rx: &mut mpsc::Receiver<WatchEvent>, secs: u64) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(secs), rx.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("watch channel closed"),
        Err(_) => panic!("no watch event within {secs}s"),
    }
}

/// Events until `pred` matches (returned with everything before it), or panic after `secs`.
pub async fn events_until(
    rx: &mut mpsc::Receiver<WatchEvent>,
    secs: u64,
    mut pred: impl FnMut(&WatchEvent) -> bool,
) -> Vec<WatchEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) => {
                let done = pred(&ev);
                seen.push(ev);
                if done {
                    return seen;
                }
            }
            Ok(None) => panic!("watch channel closed; seen {seen:?}"),
            Err(_) => panic!("timed out after {secs}s; seen {seen:?}"),
        }
    }
}

/// A TCP proxy in front of etcd. `pause` closes every proxied connection and refuses new
/// ones (they are accepted and closed at once) until `resume`.
pub struct Proxy {
    pub addr: SocketAddr,
    paused: Arc<AtomicBool>,
    kick: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let paused = Arc::new(AtomicBool::new(false));
        let kick = Arc::new(Notify::new());
        let (p, k) = (paused.clone(), kick.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    return;
                };
                if p.load(Ordering::SeqCst) {
                    drop(down);
                    continue;
                }
                let k = k.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = k.notified() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            paused,
            kick,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        self.kick.notify_waiters();
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.kick.notify_waiters();
    }
}

/// `host:port` of an `http://host:port` endpoint.
pub fn socket_addr(endpoint: &str) -> SocketAddr {
    endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("endpoint address")
}
