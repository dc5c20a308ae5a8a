//! `fulcrum vip add|del|list`.

use std::fmt::Write as _;
use std::io::Write;

use clap::{Subcommand, ValueEnum};

use super::api::{vip_path, ApiTarget, CliError};
use super::table::{io, print_json, stdout_run, write_table};
use crate::addr::VipKey;
use crate::control::messages::{
    Done, HealthCheckKindName, HealthCheckSpec, VipList, VipReply, VipRequest,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EncapArg {
    Ipip,
    Gue,
    L2dsr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CheckArg {
    Tcp,
    Http,
}

#[derive(Subcommand, Debug)]
pub enum VipCommand {
    /// Add a VIP (with no backends; add them with `fulcrum backend add`).
    Add {
        #[arg(
            help = "ADDR:PORT/PROTO, e.g. 192.0.2.10:80/tcp or [2001:db8::10]:443/tcp (port 0 = all ports)"
        )]
        vip: VipKey,
        /// How packets reach the backends.
        #[arg(long, value_enum)]
        encap: EncapArg,
        /// UDP port of GUE packets (encap gue only; default 6080).
        #[arg(long, value_name = "PORT")]
        gue_port: Option<u16>,
        /// Maglev table size, a prime (default 65537).
        #[arg(long, value_name = "M")]
        table_size: Option<u32>,
        /// Health-check every backend: a TCP connect or an HTTP GET.
        #[arg(long, value_enum)]
        check: Option<CheckArg>,
        /// Port the checks go to (default: the backend's, else the VIP's).
        #[arg(long, value_name = "PORT", requires = "check")]
        check_port: Option<u16>,
        /// HTTP path of an http check (default /).
        #[arg(long, value_name = "PATH", requires = "check")]
        check_path: Option<String>,
        /// Status an http check expects (default 200).
        #[arg(long, value_name = "STATUS", requires = "check")]
        expect_status: Option<u16>,
        /// Milliseconds between checks of a backend (default 1000).
        #[arg(long, value_name = "MS", requires = "check")]
        interval_ms: Option<u32>,
        /// Milliseconds a check may take (default 500).
        #[arg(long, value_name = "MS", requires = "check")]
        timeout_ms: Option<u32>,
        /// Consecutive passed checks that bring a backend up (default 2).
        #[arg(long, requires = "check")]
        rise: Option<u32>,
        /// Consecutive failed checks that take a backend down (default 3).
        #[arg(long, requires = "check")]
        fall: Option<u32>,
    },
    /// Remove a VIP and all its backends.
    #[command(visible_alias = "rm")]
    Del {
        /// ADDR:PORT/PROTO.
        vip: VipKey,
    },
    /// List the VIPs.
    #[command(visible_alias = "ls")]
    List {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
}

impl VipCommand {
    pub fn run(&self, api: &ApiTarget) -> Result<(), CliError> {
        stdout_run(|out| self.run_to(api, out))
    }

    pub fn run_to(&self, api: &ApiTarget, out: &mut dyn Write) -> Result<(), CliError> {
        match self {
            VipCommand::Add {
                vip,
                encap,
                gue_port,
                table_size,
                check,
                check_port,
                check_path,
                expect_status,
                interval_ms,
                timeout_ms,
                rise,
                fall,
            } => {
                let encap = match encap {
                    EncapArg::Ipip => "ipip",
                    EncapArg::Gue => "gue",
                    EncapArg::L2dsr => "l2dsr",
                };
                let healthcheck = check.map(|kind| HealthCheckSpec {
                    kind: match kind {
                        CheckArg::Tcp => HealthCheckKindName::Tcp,
                        CheckArg::Http => HealthCheckKindName::Http,
                    },
                    port: *check_port,
                    path: check_path.clone(),
                    expect_status: *expect_status,
                    interval_ms: interval_ms.unwrap_or(1000),
                    timeout_ms: timeout_ms.unwrap_or(500),
                    rise: rise.unwrap_or(2),
                    fall: fall.unwrap_or(3),
                });
                let request = VipRequest {
                    vip: vip.to_string(),
                    encap: encap.into(),
                    gue_port: *gue_port,
                    table_size: *table_size,
                    healthcheck,
                    backends: vec![],
                };
                let reply: VipReply = api.call_json("POST", "/v1/vips", &request)?;
                writeln!(
                    out,
                    "vip {} added ({encap}, table size {}); version {}",
                    reply.vip.vip, reply.vip.table_size, reply.version
                )
                .map_err(io)
            }
            VipCommand::Del { vip } => {
                let done: Done = api.call("DELETE", &vip_path(vip), None)?;
                writeln!(out, "{}; version {}", done.message, done.version).map_err(io)
            }
            VipCommand::List { json } => {
                let list: VipList = api.call("GET", "/v1/vips", None)?;
                if *json {
                    return print_json(out, &list);
                }
                let mut rows = vec![vec![
                    "VIP".to_string(),
                    "ENCAP".into(),
                    "TABLE".into(),
                    "BACKENDS".into(),
                    "CHECK".into(),
                ]];
                for v in &list.vips {
                    let mut encap = v.encap.to_string();
                    if let Some(port) = v.gue_port {
                        let _ = write!(encap, ":{port}");
                    }
                    let mut backends = backend_summary(&v.backends);
                    if v.all_backends_down {
                        backends.push_str(" ALL DOWN");
                    }
                    let check = v
                        .healthcheck
                        .as_ref()
                        .map_or("-".to_string(), |h| match h.kind {
                            HealthCheckKindName::Tcp => format!("tcp/{}ms", h.interval_ms),
                            HealthCheckKindName::Http => format!("http/{}ms", h.interval_ms),
                        });
                    rows.push(vec![
                        v.vip.to_string(),
                        encap,
                        v.table_size.to_string(),
                        backends,
                        check,
                    ]);
                }
                write_table(out, &rows)?;
                if list.vips.is_empty() {
                    writeln!(
                        out,
                        "(no VIPs; add one with: fulcrum vip add ADDR:PORT/PROTO --encap ipip)"
                    )
                    .map_err(io)?;
                }
                Ok(())
            }
        }
    }
}

fn backend_summary(backends: &[crate::control::messages::BackendView]) -> String {
    use crate::snapshot::BackendState;
    let count = |s| backends.iter().filter(|b| b.state == s).count();
    let mut parts = vec![format!("{} active", count(BackendState::Active))];
    for (state, name) in [
        (BackendState::Draining, "draining"),
        (BackendState::Down, "down"),
    ] {
        let n = count(state);
        if n > 0 {
            parts.push(format!("{n} {name}"));
        }
    }
    parts.join(", ")
}
