//! systemd readiness and watchdog notifications (`Type=notify` units, as binary-deployment
//! guides run flanneld): `READY=1` once subnet.env is written and the first sync is done,
//! `STOPPING=1` on shutdown, and `WATCHDOG=1` every half `WATCHDOG_USEC` while the control loop
//! is alive (the same liveness as `/healthz`), so a stuck agent is restarted by systemd.
//!
//! Written here rather than with the `sd-notify` crate: its 0.4 line connects `NOTIFY_SOCKET`
//! as a filesystem path only, so the abstract-namespace sockets (`@name`) that container
//! runtimes and `systemd-run --scope` hand out do not work, and it unsets the variables with
//! `std::env::remove_var`, which is unsound in a multi-threaded process. The protocol itself is
//! one datagram of `KEY=VALUE` lines to that socket (sd_notify(3)).
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tracing::{debug, warn};

/// Where notifications go: `NOTIFY_SOCKET` as read at start. None: not run by systemd.
#[derive(Debug, Clone)]
pub struct Notifier {
    addr: Option<Target>,
    /// Half of `WATCHDOG_USEC` (systemd's advice), when the watchdog is on for this process.
    watchdog_every: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Path(String),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From this process's environment.
    pub fn from_env() -> Notifier {
        let get = |k: &str| std::env::var(k).ok();
        Self::from_vars(
            get("NOTIFY_SOCKET").as_deref(),
            get("WATCHDOG_USEC").as_deref(),
            get("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    /// From the variables' values (pure, unit-tested): an empty or relative `NOTIFY_SOCKET`
    /// is ignored, as libsystemd ignores it; the watchdog applies when `WATCHDOG_USEC` is a
    /// positive number and `WATCHDOG_PID` is unset or this process.
    pub fn from_vars(
        socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> Notifier {
        let addr = match socket {
            Some(s) if s.starts_with('@') && s.len() > 1 => {
                Some(Target::Abstract(s.as_bytes()[1..].to_vec()))
            }
            Some(s) if s.starts_with('/') => Some(Target::Path(s.to_string())),
            _ => None,
        };
        let for_us = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(pid));
        let watchdog_every = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(|u| Duration::from_micros(u) / 2);
        Notifier {
            addr,
            watchdog_every,
        }
    }

    pub fn enabled(&self) -> bool {
        self.addr.is_some()
    }

    /// How often to send `WATCHDOG=1`, when systemd asked for it.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.addr.as_ref().and(self.watchdog_every)
    }

    /// Sends `state` (newline-separated `KEY=VALUE`); a failure is logged, never fatal.
    pub fn notify(&self, state: &str) {
        let Some(addr) = &self.addr else {
            return;
        };
        match send(addr, state) {
            Ok(()) => debug!("sd_notify: {}", state.replace('\n', " ")),
            Err(e) => warn!("sd_notify {state:?} to {addr:?} failed: {e}"),
        }
    }

    pub fn ready(&self) {
        self.notify("READY=1\nSTATUS=weft is ready");
    }

    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }

    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }
}

fn send(addr: &Target, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let addr = match addr {
        Target::Path(p) => SocketAddr::from_pathname(p)?,
        Target::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(name)?
        }
    };
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;

    #[test]
    fn socket_and_watchdog_variables_are_read_as_libsystemd_reads_them() {
        let n = Notifier::from_vars(
            Some("/run/systemd/notify"),
            Some("30000000"),
            Some("42"),
            42,
        );
        assert_eq!(n.addr, Some(Target::Path("/run/systemd/notify".into())));
        assert_eq!(n.watchdog_every(), Some(Duration::from_secs(15)));
        let n = Notifier::from_vars(Some("@weft-test"), Some("1000"), None, 7);
        assert_eq!(n.addr, Some(Target::Abstract(b"weft-test".to_vec())));
        assert_eq!(n.watchdog_every(), Some(Duration::from_micros(500)));
        // Another process's watchdog, a zero or bad interval, no socket: nothing.
        assert_eq!(
            Notifier::from_vars(Some("/x"), Some("1000"), Some("8"), 7).watchdog_every(),
            None
        );
        assert_eq!(
            Notifier::from_vars(Some("/x"), Some("0"), None, 7).watchdog_every(),
            None
        );
        assert_eq!(
            Notifier::from_vars(None, Some("1000"), None, 7).watchdog_every(),
            None
        );
        for bad in ["", "relative/path", "@"] {
            assert!(
                !Notifier::from_vars(Some(bad), None, None, 7).enabled(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn notifications_arrive_as_one_datagram_on_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_vars(path.to_str(), None, None, 1);
        n.ready();
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=weft is ready");

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("weft-sd-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::from_vars(Some(&format!("@{name}")), None, None, 1);
        n.stopping();
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
    }
}
