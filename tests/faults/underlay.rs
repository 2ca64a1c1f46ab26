//! The underlay firewall that cuts the agents off from a running etcd, and HTTP requests from
//! inside a namespace (health endpoints).
use super::*;

/// An nftables table in the underlay namespace that answers the nodes' connections to etcd
/// with a TCP reset (as if etcd were down) while etcd keeps serving local clients.
pub(crate) struct Cut {
    pub(crate) ns: String,
    pub(crate) table: String,
}

impl Cut {
    pub(crate) fn start(lab: &Lab) -> Cut {
        let ns = lab.underlay_ns().to_owned();
        let port = lab.etcd_endpoint().expect("endpoint");
        let port = port.rsplit(':').next().expect("port").to_owned();
        let table = format!("weftcut{}", std::process::id());
        let rules = format!(
            "table inet {table} {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  \
             iifname \"br0\" tcp dport {port} reject with tcp reset\n }}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(rules.as_bytes())
            .expect("write rules");
        assert!(child.wait().expect("nft").success(), "nft -f failed");
        Cut { ns, table }
    }

    pub(crate) fn end(self) {
        // Drop removes the table.
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let st = Command::new("ip")
            .args(["netns", "exec", &self.ns, "nft", "delete", "table", "inet"])
            .arg(&self.table)
            .status();
        if !st.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("removing nft table {} in {}: {st:?}", self.table, self.ns);
        }
    }
}

/// `GET <path>` on `addr:port` from inside `ns`: Ok((status, body)) or Err(connection error).
pub(crate) fn http_get(
    ns: &str,
    addr: &str,
    port: u16,
    path: &str,
) -> Result<(u16, String), String> {
    let script = format!(
        "exec 3<>/dev/tcp/{addr}/{port} || exit 7; printf 'GET {path} HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' >&3; cat <&3"
    );
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "5", "bash", "-c", &script])
        .output()
        .map_err(|e| format!("bash: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {text:?}"))?;
    Ok((status, text))
}
