//! systemd notifications from the real weft binary on a lab node, received on a real
//! `NOTIFY_SOCKET` datagram socket of the test's: READY=1 only once subnet.env exists,
//! WATCHDOG=1 at half `WATCHDOG_USEC`, STOPPING=1 after SIGTERM.
#[path = "common/lab.rs"]
mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weft_testkit::lab::{Lab, LabSpec, Signal};

#[test]
fn ready_after_subnet_env_watchdog_pings_and_stopping_on_sigterm() {
    if !common::need::root("ready_after_subnet_env_watchdog_pings_and_stopping_on_sigterm") {
        return;
    }
    let mut spec = LabSpec::new(1, common::weft_bin());
    spec.backend = "vxlan".to_owned();
    let mut lab = Lab::build(spec).expect("lab");
    let sock_path = lab.dir().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind NOTIFY_SOCKET");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let subnet_file = lab.subnet_file(1).expect("path");
    // Each datagram, when it arrived, and whether subnet.env existed then.
    let (tx, rx) = mpsc::channel::<(String, Instant, bool)>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let stop = msg.contains("STOPPING=1");
                if tx
                    .send((msg, Instant::now(), subnet_file.exists()))
                    .is_err()
                    || stop
                {
                    return;
                }
            }
        }
    });
    lab.set_agent_env(vec![
        ("NOTIFY_SOCKET".into(), sock_path.display().to_string()),
        // 1 s: pings every 500 ms.
        ("WATCHDOG_USEC".into(), "1000000".into()),
    ]);
    lab.start_node(1).expect("start");
    lab.wait_subnet_env(1, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}; log:\n{}", lab.log_tail(1, 20)));

    let mut got = Vec::new();
    let mut ready_at = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    // READY, then at least 5 watchdog pings after it.
    while Instant::now() < deadline {
        let Ok((msg, at, env_existed)) = rx.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        if msg.contains("READY=1") {
            assert!(env_existed, "READY=1 before subnet.env was written");
            ready_at = Some(at);
        }
        got.push((msg, at));
        let pings_after_ready = got
            .iter()
            .filter(|(m, t)| m == "WATCHDOG=1" && ready_at.is_some_and(|r| *t >= r))
            .count();
        if pings_after_ready >= 5 {
            break;
        }
    }
    let ready_at = ready_at.unwrap_or_else(|| panic!("no READY=1; got {got:?}"));
    let pings: Vec<Instant> = got
        .iter()
        .filter(|(m, t)| m == "WATCHDOG=1" && *t >= ready_at)
        .map(|(_, t)| *t)
        .collect();
    assert!(pings.len() >= 5, "watchdog pings: {got:?}");
    // About every 500 ms (half of WATCHDOG_USEC): never as far apart as systemd's deadline
    // (the full interval).
    for w in pings.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap < Duration::from_secs(1),
            "watchdog gap {gap:?}: {got:?}"
        );
        assert!(
            gap >= Duration::from_millis(250),
            "watchdog gap {gap:?}: {got:?}"
        );
    }

    lab.stop_node(1, Signal::SIGTERM).expect("stop");
    let stopping = loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok((msg, _, _)) if msg.contains("STOPPING=1") => break true,
            Ok(_) => continue,
            Err(_) => break false,
        }
    };
    assert!(
        stopping,
        "no STOPPING=1 after SIGTERM; log:\n{}",
        lab.log_tail(1, 20)
    );
    reader.join().expect("reader");
}
