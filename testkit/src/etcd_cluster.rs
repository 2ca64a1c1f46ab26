//! A real etcd cluster of several members ([`EtcdServer`]s sharing one `--initial-cluster`),
//! each serving clients on its own address, for the fault tests of member failover: kill a
//! member, find the leader, restart a member on its data dir.
//!
//! Peer URLs are on 127.0.0.1 (all members run in one namespace); the client URLs on the
//! addresses given, so a node reaches each member at its own address. Every member is launched
//! before any is waited for, since none is healthy before a quorum is up.
use std::net::{IpAddr, Ipv4Addr, TcpListener};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::etcd_server::{EtcdServer, EtcdServerOpts};

/// A running cluster; dropping it kills every member and removes their data dirs.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdServer>,
}

impl EtcdCluster {
    /// Starts one member per address in `ips` (inside `netns` when given; the addresses must
    /// exist there) and waits until each answers health.
    pub fn start(netns: Option<&str>, ips: &[IpAddr]) -> Result<EtcdCluster> {
        if ips.is_empty() {
            bail!("a cluster needs at least one member");
        }
        let mut members = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let opts = EtcdServerOpts {
                netns: netns.map(str::to_owned),
                listen_ip: *ip,
                client_port: None,
                tls: None,
            };
            members.push(EtcdServer::member(
                opts,
                &format!("m{}", i + 1),
                free_port()?,
                free_port()?,
            )?);
        }
        let cluster = members
            .iter()
            .map(EtcdServer::peer_entry)
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.set_initial_cluster(cluster.clone());
            m.launch()
                .with_context(|| format!("launching {}", m.endpoint()))?;
        }
        for m in &mut members {
            let endpoint = m.endpoint();
            m.wait_healthy()
                .with_context(|| format!("member {endpoint} of {cluster}"))?;
        }
        Ok(EtcdCluster { members })
    }

    /// Every member's client URL, in member order (`http://ip:port`).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::endpoint).collect()
    }

    /// Member `i` (0-based), to stop or restart.
    pub fn member(&mut self, i: usize) -> Result<&mut EtcdServer> {
        let n = self.members.len();
        self.members
            .get_mut(i)
            .ok_or_else(|| anyhow!("member {i} of {n}"))
    }

    /// `etcdctl <args>` through the first running member.
    pub fn etcdctl(&mut self, args: &[&str]) -> Result<String> {
        let mut last = anyhow!("no member is running");
        for m in &mut self.members {
            if !m.is_running() {
                continue;
            }
            match m.etcdctl(args) {
                Ok(out) => return Ok(out),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The member ids, in member order, as etcd reports them (`member_id` in response headers).
    pub fn member_ids(&mut self) -> Result<Vec<u64>> {
        self.member_ids_running()?
            .into_iter()
            .enumerate()
            .map(|(i, id)| id.ok_or_else(|| anyhow!("member {i} is not running")))
            .collect()
    }

    /// The index of the current leader, asked of the first running member.
    pub fn leader(&mut self) -> Result<usize> {
        let json = self.etcdctl(&["endpoint", "status", "-w", "json"])?;
        let leader = status_field(&json, "leader")?;
        let ids = self.member_ids_running()?;
        ids.iter()
            .position(|id| *id == Some(leader))
            .ok_or_else(|| anyhow!("leader {leader:x} is not a running member"))
    }

    /// Member ids of the running members (None for a stopped one).
    fn member_ids_running(&mut self) -> Result<Vec<Option<u64>>> {
        let mut ids = Vec::new();
        for m in &mut self.members {
            if !m.is_running() {
                ids.push(None);
                continue;
            }
            let endpoint = m.endpoint();
            let json = m
                .etcdctl(&["endpoint", "status", "-w", "json"])
                .with_context(|| format!("endpoint status of {endpoint}"))?;
            ids.push(Some(status_field(&json, "member_id")?));
        }
        Ok(ids)
    }
}

/// A field of the header of `etcdctl endpoint status -w json` (`member_id`, `leader` is in
/// `Status`), as a number.
fn status_field(json: &str, field: &str) -> Result<u64> {
    let v: serde_json::Value = serde_json::from_str(json).context("endpoint status JSON")?;
    let s = &v[0]["Status"];
    let n = match field {
        "leader" => &s["leader"],
        _ => &s["header"][field],
    };
    n.as_u64()
        .ok_or_else(|| anyhow!("no {field} in endpoint status: {json}"))
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a probe socket")?;
    Ok(l.local_addr().context("local_addr")?.port())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_from_etcdctls_json() {
        let json = r#"[{"Endpoint":"http://198.18.0.251:2379","Status":{"header":{"cluster_id":1,"member_id":12345,"revision":7,"raft_term":2},"version":"3.4.23","dbSize":20480,"leader":12345,"raftIndex":9,"raftTerm":2}}]"#;
        assert_eq!(status_field(json, "member_id").unwrap(), 12345);
        assert_eq!(status_field(json, "leader").unwrap(), 12345);
        assert!(status_field("[]", "leader").is_err());
    }
}
