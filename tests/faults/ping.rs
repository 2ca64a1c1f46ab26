//! Pings at 10/s between pods for the length of a scenario, and parsing their output.
use super::*;

/// `ping -i 0.1` from one pod to another for the length of a scenario.
pub(crate) struct Pinger {
    pub(crate) child: Child,
    pub(crate) out: PathBuf,
    pub(crate) what: String,
}

#[derive(Debug)]
pub(crate) struct PingStats {
    pub(crate) sent: u64,
    pub(crate) replied: u64,
    /// Sequence numbers that never got a reply (the last one in flight at the stop excluded).
    pub(crate) lost: Vec<u64>,
}

impl Pinger {
    pub(crate) fn start(lab: &Lab, from: usize, to: usize) -> Pinger {
        let ns = lab.pod_ns(from).expect("pod ns").to_owned();
        let dst = lab.pod_ip(to).expect("pod ip").to_string();
        let out = lab.dir().join(format!("ping-{from}-{to}.txt"));
        let file = std::fs::File::create(&out).expect("ping output file");
        let child = Command::new("ip")
            .args([
                "netns", "exec", &ns, "ping", "-n", "-D", "-O", "-i", "0.1", "-W", "1",
            ])
            .arg(&dst)
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("start ping");
        // Wait for the first reply, so a lost packet later is the fault's doing.
        wait_until(Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.contains("bytes from") {
                Ok(())
            } else {
                Err(format!("no ping reply from {dst} yet: {text}"))
            }
        })
        .expect("ping works before the fault");
        Pinger {
            child,
            out,
            what: format!("pod {from} → pod {to}"),
        }
    }

    pub(crate) fn stop(mut self) -> PingStats {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, Signal::SIGINT);
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.out).expect("ping output");
        let stats = parse_ping(&text);
        eprintln!(
            "ping {}: {} sent, {} replies, lost {:?}",
            self.what, stats.sent, stats.replied, stats.lost
        );
        stats
    }
}

pub(crate) fn seq_of(line: &str) -> Option<u64> {
    let rest = &line[line.find("icmp_seq=")? + "icmp_seq=".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

pub(crate) fn parse_ping(text: &str) -> PingStats {
    let mut replied = BTreeSet::new();
    let mut max_seq = 0;
    let mut sent = 0;
    for line in text.lines() {
        if let Some(seq) = seq_of(line) {
            max_seq = max_seq.max(seq);
            if line.contains("bytes from") {
                replied.insert(seq);
            }
        }
        if let Some(i) = line.find(" packets transmitted") {
            sent = line[..i].trim().parse().unwrap_or(0);
        }
    }
    let sent = sent.max(max_seq);
    // The last packet may still have been in flight when ping was stopped.
    let lost = (1..sent).filter(|s| !replied.contains(s)).collect();
    PingStats {
        sent,
        replied: replied.len() as u64,
        lost,
    }
}

#[test]
fn ping_output_is_parsed() {
    let text = "PING 10.244.2.2 (10.244.2.2) 56(84) bytes of data.\n\
        [1.0] 64 bytes from 10.244.2.2: icmp_seq=1 ttl=62 time=0.1 ms\n\
        [1.1] no answer yet for icmp_seq=2\n\
        [1.2] 64 bytes from 10.244.2.2: icmp_seq=3 ttl=62 time=0.1 ms\n\
        [1.3] 64 bytes from 10.244.2.2: icmp_seq=4 ttl=62 time=0.1 ms\n\n\
        --- 10.244.2.2 ping statistics ---\n\
        5 packets transmitted, 3 received, 40% packet loss, time 400ms\n";
    let s = parse_ping(text);
    assert_eq!(s.sent, 5);
    assert_eq!(s.replied, 3);
    // seq 5 was in flight at the stop; seq 2 is lost.
    assert_eq!(s.lost, vec![2]);
}
