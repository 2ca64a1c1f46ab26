//! subnet.env: exact text, CNI-plugin parsing rules, previous subnet for lease reuse.
use ipnet::{Ipv4Net, Ipv6Net};
use net_conf::subnet_env::{previous_ipv6_subnet, previous_network};
use net_conf::{SubnetEnv, SubnetEnvError, previous_subnet};

fn v4(s: &str) -> Ipv4Net {
    s.parse().expect("test CIDR")
}

fn v6(s: &str) -> Ipv6Net {
    s.parse().expect("test CIDR")
}

fn dual_stack() -> SubnetEnv {
    SubnetEnv {
        network: Some(v4("10.42.0.0/16")),
        subnet: Some(v4("10.42.0.0/24")),
        ipv6_network: Some(v6("2001:cafe:42::/56")),
        ipv6_subnet: Some(v6("2001:cafe:42::/64")),
        more_networks: Vec::new(),
        more_ipv6_networks: Vec::new(),
        mtu: 1450,
        ipmasq: true,
    }
}

#[test]
fn renders_documented_dual_stack_example() {
    // Documentation/configuration.md.
    assert_eq!(
        dual_stack().render(),
        "FLANNEL_NETWORK=10.42.0.0/16\n\
         FLANNEL_SUBNET=10.42.0.1/24\n\
         FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\n\
         FLANNEL_IPV6_SUBNET=2001:cafe:42::1/64\n\
         FLANNEL_MTU=1450\n\
         FLANNEL_IPMASQ=true\n"
    );
}

#[test]
fn renders_ipv4_only() {
    let env = SubnetEnv {
        network: Some(v4("10.244.0.0/16")),
        subnet: Some(v4("10.244.1.0/24")),
        ipv6_network: None,
        ipv6_subnet: None,
        more_networks: Vec::new(),
        more_ipv6_networks: Vec::new(),
        mtu: 1500,
        ipmasq: false,
    };
    assert_eq!(
        env.render(),
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n"
    );
    assert_eq!(SubnetEnv::parse(&env.render()), Ok(env));
}

#[test]
fn renders_ipv6_only() {
    let env = SubnetEnv {
        network: None,
        subnet: None,
        ..dual_stack()
    };
    assert_eq!(
        env.render(),
        "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    );
    assert_eq!(SubnetEnv::parse(&env.render()), Ok(env));
}

#[test]
fn parse_round_trips_and_stores_networks() {
    assert_eq!(SubnetEnv::parse(&dual_stack().render()), Ok(dual_stack()));
}

#[test]
fn parse_like_the_cni_plugin() {
    let text = "# written by flanneld\n\n  FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n\
                FLANNEL_MTU=8950\nSOMETHING_ELSE=a=b\nno equals sign\nFLANNEL_IPMASQ=True\n";
    let env = SubnetEnv::parse(text).expect("valid");
    assert_eq!(env.network, Some(v4("10.244.0.0/16")));
    assert_eq!(env.subnet, Some(v4("10.244.3.0/24")));
    assert_eq!(env.mtu, 8950);
    assert!(env.ipmasq);
    assert_eq!(env.ipv6_network, None);
}

#[test]
fn missing_keys_are_all_named() {
    assert_eq!(
        SubnetEnv::parse("").map_err(|e| e.to_string()),
        Err(
            "subnet.env is missing FLANNEL_NETWORK or FLANNEL_IPV6_NETWORK, \
             FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ"
                .to_string()
        )
    );
    assert_eq!(
        SubnetEnv::parse(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\n"
        ),
        Err(SubnetEnvError::Missing {
            keys: vec!["FLANNEL_IPMASQ".to_string()]
        })
    );
    assert_eq!(
        SubnetEnv::parse(
            "FLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        ),
        Err(SubnetEnvError::Missing {
            keys: vec!["FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET".to_string()]
        })
    );
}

#[test]
fn bad_values_name_line_key_and_value() {
    let text = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=big\nFLANNEL_IPMASQ=true\n";
    let err = SubnetEnv::parse(text).expect_err("bad MTU");
    assert_eq!(
        err,
        SubnetEnvError::Value {
            line: 3,
            key: "FLANNEL_MTU".into(),
            value: "big".into(),
            reason: "not an MTU".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "subnet.env line 3: FLANNEL_MTU=\"big\": not an MTU"
    );
    for (line, reason) in [
        ("FLANNEL_NETWORK=10.244.0.0", "not an IPv4 CIDR"),
        ("FLANNEL_SUBNET=fd00::1/64", "not an IPv4 CIDR"),
        ("FLANNEL_IPV6_NETWORK=10.0.0.0/8", "not an IPv6 CIDR"),
        ("FLANNEL_IPV6_SUBNET=x", "not an IPv6 CIDR"),
        ("FLANNEL_IPMASQ=yes", "not a boolean"),
    ] {
        match SubnetEnv::parse(line) {
            Err(SubnetEnvError::Value {
                line: 1, reason: r, ..
            }) => assert_eq!(r, reason, "{line}"),
            other => panic!("{line}: {other:?}"),
        }
    }
}

#[test]
fn previous_subnet_from_file() {
    let text = dual_stack().render();
    assert_eq!(previous_subnet(&text), Some(v4("10.42.0.0/24")));
    assert_eq!(previous_ipv6_subnet(&text), Some(v6("2001:cafe:42::/64")));
    assert_eq!(previous_network(&text), Some(v4("10.42.0.0/16")));
    assert_eq!(
        previous_subnet("FLANNEL_SUBNET=10.244.1.1/24\n"),
        Some(v4("10.244.1.0/24"))
    );
    // godotenv tolerates quotes and `export`.
    assert_eq!(
        previous_subnet("export FLANNEL_SUBNET=\"10.244.1.1/24\"\n"),
        Some(v4("10.244.1.0/24"))
    );
    // A one-entry list is that entry; more than one entry is ignored.
    assert_eq!(
        previous_subnet("FLANNEL_SUBNET=10.244.1.1/24,\n"),
        Some(v4("10.244.1.0/24"))
    );
    assert_eq!(
        previous_subnet("FLANNEL_SUBNET=10.244.1.1/24,10.245.1.1/24\n"),
        None
    );
    assert_eq!(previous_subnet("FLANNEL_SUBNET=garbage\n"), None);
    assert_eq!(previous_subnet("FLANNEL_SUBNET=\n"), None);
    assert_eq!(previous_subnet("FLANNEL_NETWORK=10.244.0.0/16\n"), None);
    assert_eq!(previous_subnet(""), None);
}
