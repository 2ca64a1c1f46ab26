//! Dumps read on a netlink socket of their own, each datagram parsed as it arrives.
//!
//! Through the shared rtnetlink connection a dump of 20,000 routes (or neighbours, FDB entries,
//! nexthops) first piles up in the connection's channel as parsed messages — several MiB at the
//! agent's peak, during the audit that follows the initial sync. Here only one datagram and
//! what the caller keeps of it are held at a time.
use rtnetlink::packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::sys::{AsyncSocket as _, AsyncSocketExt as _, SocketAddr, TokioSocket, protocols};

use super::nexthop::RtMessage;
use crate::BackendError;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// The sequence number of the one request each dump socket sends.
const SEQ: u32 = 1;

/// Sends the dump request `msg` (`NLM_F_REQUEST | NLM_F_DUMP`) on a new NETLINK_ROUTE socket
/// and hands every message of the answer to `each`. `op` (the `ip` command) names errors; an
/// error reply keeps the kernel's errno.
pub(super) async fn dump_each(
    op: &str,
    msg: RtMessage,
    mut each: impl FnMut(RtMessage),
) -> Result<(), BackendError> {
    let io = |e: std::io::Error| BackendError::Netlink {
        op: op.to_string(),
        errno: e.raw_os_error(),
        message: e.to_string(),
    };
    let mut sock = TokioSocket::new(protocols::NETLINK_ROUTE).map_err(io)?;
    sock.socket_mut().bind_auto().map_err(io)?;
    sock.socket_mut()
        .connect(&SocketAddr::new(0, 0))
        .map_err(io)?;
    let mut req = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.header.sequence_number = SEQ;
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    sock.send(&buf).await.map_err(io)?;
    loop {
        let (datagram, _) = sock.recv_from_full().await.map_err(io)?;
        match parse_datagram(&datagram, SEQ, &mut each) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(errno) => {
                return Err(BackendError::Netlink {
                    op: op.to_string(),
                    errno: Some(errno),
                    message: std::io::Error::from_raw_os_error(errno).to_string(),
                });
            }
        }
    }
}

/// The messages of one datagram answering request `seq`, each handed to `each` (messages that
/// do not parse are skipped). Ok(true) at the end of the dump (NLMSG_DONE); Err(errno) for an
/// error reply.
pub(super) fn parse_datagram(
    datagram: &[u8],
    seq: u32,
    each: &mut impl FnMut(RtMessage),
) -> Result<bool, i32> {
    let mut rest = datagram;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let msg_seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let bytes = &rest[..len];
        rest = &rest[((len + 3) & !3).min(rest.len())..];
        if msg_seq != seq {
            continue;
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = bytes
                    .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
                    .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                return if code == 0 { Ok(true) } else { Err(code.abs()) };
            }
            _ => {
                if let Ok(m) = NetlinkMessage::<RtMessage>::deserialize(bytes) {
                    if let NetlinkPayload::InnerMessage(inner) = m.payload {
                        each(inner);
                    }
                }
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_core::NetlinkSerializable as _;

    use super::*;
    use crate::nl::nexthop::{NexthopMessage, RTM_NEWNEXTHOP};

    /// One netlink message: header (length, type, flags, seq, port) + payload, padded.
    fn msg(seq: u32, kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn nexthop(id: u32) -> Vec<u8> {
        let m = RtMessage::Nexthop(NexthopMessage {
            kind: RTM_NEWNEXTHOP,
            family: 2,
            protocol: crate::RTPROT_WEFT,
            attrs: vec![
                (1, id.to_ne_bytes().to_vec()),
                (5, 3u32.to_ne_bytes().to_vec()),
                (6, vec![198, 18, 0, 2]),
            ],
            ..Default::default()
        });
        let mut b = vec![0; m.buffer_len()];
        m.serialize(&mut b);
        b
    }

    #[test]
    fn datagrams_of_one_request_until_done_or_error() {
        // Two nexthops answering request 7, one answering another request.
        let mut datagram = msg(7, RTM_NEWNEXTHOP, &nexthop(5));
        datagram.extend(msg(8, RTM_NEWNEXTHOP, &nexthop(6)));
        datagram.extend(msg(7, RTM_NEWNEXTHOP, &nexthop(9)));
        let mut ids = Vec::new();
        let mut each = |m: RtMessage| {
            if let RtMessage::Nexthop(n) = m {
                ids.extend(n.nexthop().map(|n| n.id));
            }
        };
        assert_eq!(parse_datagram(&datagram, 7, &mut each), Ok(false));
        assert_eq!(
            parse_datagram(&msg(7, NLMSG_DONE, &[0; 4]), 7, &mut each),
            Ok(true)
        );
        let eopnotsupp = (-95i32).to_ne_bytes();
        assert_eq!(
            parse_datagram(&msg(7, NLMSG_ERROR, &eopnotsupp), 7, &mut each),
            Err(95)
        );
        // A truncated message ends the datagram without a panic.
        let mut cut = msg(7, RTM_NEWNEXTHOP, &nexthop(10));
        cut.truncate(20);
        assert_eq!(parse_datagram(&cut, 7, &mut each), Ok(false));
        assert_eq!(ids, vec![5, 9]);
    }
}
