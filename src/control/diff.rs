//! What `fulcrum config apply` would change: the difference between the running VIPs and a
//! configuration file's, as a list of [`Change`]s. Pure: no state is touched.

use super::messages::{Change, ChangeOp};
use crate::config::{HealthCheck, HealthCheckKind, Vip};
use crate::datapath::encap::EncapMode;

/// The changes that turn `old` into `new`: removed VIPs first, then, in `new`'s order, added
/// VIPs and the changes of the VIPs in both.
pub fn diff(old: &[Vip], new: &[Vip]) -> Vec<Change> {
    let mut changes = Vec::new();
    for o in old {
        if !new.iter().any(|n| n.key == o.key) {
            changes.push(Change {
                op: ChangeOp::RemoveVip,
                vip: o.key,
                backend: None,
                detail: format!("{} backends", o.backends.len()),
            });
        }
    }
    for n in new {
        let Some(o) = old.iter().find(|o| o.key == n.key) else {
            changes.push(Change {
                op: ChangeOp::AddVip,
                vip: n.key,
                backend: None,
                detail: describe_vip(n),
            });
            for b in &n.backends {
                changes.push(Change {
                    op: ChangeOp::AddBackend,
                    vip: n.key,
                    backend: Some(b.address),
                    detail: format!("weight {}", b.weight),
                });
            }
            continue;
        };
        let mut fields = Vec::new();
        if (o.encap, o.gue_port) != (n.encap, n.gue_port) {
            fields.push(format!("encap {} -> {}", encap(o), encap(n)));
        }
        if o.table_size != n.table_size {
            fields.push(format!("table_size {} -> {}", o.table_size, n.table_size));
        }
        if o.healthcheck != n.healthcheck {
            fields.push(format!(
                "healthcheck {} -> {}",
                healthcheck(o.healthcheck.as_ref()),
                healthcheck(n.healthcheck.as_ref())
            ));
        }
        if !fields.is_empty() {
            changes.push(Change {
                op: ChangeOp::ChangeVip,
                vip: n.key,
                backend: None,
                detail: fields.join(", "),
            });
        }
        for ob in &o.backends {
            if !n.backends.iter().any(|nb| nb.address == ob.address) {
                changes.push(Change {
                    op: ChangeOp::RemoveBackend,
                    vip: n.key,
                    backend: Some(ob.address),
                    detail: String::new(),
                });
            }
        }
        for nb in &n.backends {
            match o.backends.iter().find(|ob| ob.address == nb.address) {
                None => changes.push(Change {
                    op: ChangeOp::AddBackend,
                    vip: n.key,
                    backend: Some(nb.address),
                    detail: format!("weight {}", nb.weight),
                }),
                Some(ob) => {
                    let mut fields = Vec::new();
                    if ob.weight != nb.weight {
                        fields.push(format!("weight {} -> {}", ob.weight, nb.weight));
                    }
                    if ob.mac != nb.mac {
                        let mac = |m: Option<crate::addr::MacAddr>| {
                            m.map_or_else(|| "none".to_string(), |m| m.to_string())
                        };
                        fields.push(format!("mac {} -> {}", mac(ob.mac), mac(nb.mac)));
                    }
                    if !fields.is_empty() {
                        changes.push(Change {
                            op: ChangeOp::ChangeBackend,
                            vip: n.key,
                            backend: Some(nb.address),
                            detail: fields.join(", "),
                        });
                    }
                }
            }
        }
    }
    changes
}

fn encap(v: &Vip) -> String {
    match (v.encap, v.gue_port) {
        (EncapMode::Gue, Some(port)) => format!("gue (port {port})"),
        (mode, _) => mode.to_string(),
    }
}

fn describe_vip(v: &Vip) -> String {
    format!(
        "encap {}, table_size {}, healthcheck {}",
        encap(v),
        v.table_size,
        healthcheck(v.healthcheck.as_ref())
    )
}

fn healthcheck(h: Option<&HealthCheck>) -> String {
    let Some(h) = h else {
        return "none".into();
    };
    let kind = match &h.kind {
        HealthCheckKind::Tcp => "tcp".to_string(),
        HealthCheckKind::Http {
            path,
            expect_status,
        } => format!("http GET {path} = {expect_status}"),
    };
    let port = h.port.map(|p| format!(" port {p}")).unwrap_or_default();
    format!(
        "{kind}{port} every {} ms (timeout {} ms, rise {}, fall {})",
        h.interval_ms, h.timeout_ms, h.rise, h.fall
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Config};

    fn vips(extra: &str) -> Vec<Vip> {
        let text = format!("{}\n{extra}", Config::example());
        config::from_str(&text, "t.toml").unwrap().vips
    }

    #[test]
    fn lists_every_kind_of_change() {
        let old =
            vips("[[vip]]\naddress = \"192.0.2.11:80\"\nprotocol = \"tcp\"\nencap = \"ipip\"\n");
        let mut new = vips(
            "[[vip]]\naddress = \"192.0.2.12:53\"\nprotocol = \"udp\"\nencap = \"gue\"\n[[vip.backend]]\naddress = \"198.51.100.20\"\n",
        );
        new[0].backends[0].weight = 5;
        new[0].backends.push(config::Backend {
            address: "198.51.100.13".parse().unwrap(),
            weight: 2,
            mac: None,
        });
        new[0].table_size = 251;
        let text: Vec<String> = diff(&old, &new).iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "- vip 192.0.2.11:80/tcp: 0 backends",
                "~ vip 192.0.2.10:80/tcp: table_size 65537 -> 251",
                "~ backend 198.51.100.11 of vip 192.0.2.10:80/tcp: weight 1 -> 5",
                "+ backend 198.51.100.13 of vip 192.0.2.10:80/tcp: weight 2",
                "+ vip 192.0.2.12:53/udp: encap gue (port 6080), table_size 65537, healthcheck none",
                "+ backend 198.51.100.20 of vip 192.0.2.12:53/udp: weight 1",
            ]
        );
        assert!(diff(&new, &new).is_empty());
        let removed = diff(&new, &old);
        assert!(removed.iter().any(|c| c.op == ChangeOp::RemoveBackend
            && c.backend == Some("198.51.100.13".parse().unwrap())));
    }
}
