//! `fulcrum backend add|del|list|weight|drain|undrain`.

use std::io::Write;

use clap::Subcommand;

use super::api::{backend_path, vip_path, ApiTarget, CliError};
use super::table::{io, print_json, stdout_run, write_table};
use crate::addr::{BackendAddr, MacAddr, VipKey};
use crate::config::MAX_WEIGHT;
use crate::control::messages::{BackendList, BackendReply, BackendRequest, Done, WeightRequest};

/// `--weight` and `backend weight`: 0 to 10000, with the daemon's message.
fn parse_weight(text: &str) -> Result<u16, String> {
    let weight: i64 = text.parse().map_err(|_| {
        format!("weight {text:?} is not a number; use 0 to {MAX_WEIGHT} (0 drains the backend)")
    })?;
    u16::try_from(weight)
        .ok()
        .filter(|w| *w <= MAX_WEIGHT)
        .ok_or_else(|| {
            format!("weight {weight} is out of range; use 0 to {MAX_WEIGHT} (0 drains the backend)")
        })
}

#[derive(Subcommand, Debug)]
pub enum BackendCommand {
    /// Add a backend to a VIP.
    Add {
        /// ADDR:PORT/PROTO.
        vip: VipKey,
        #[arg(help = "ADDR or ADDR:PORT, e.g. 198.51.100.7 or [2001:db8::7]:8080")]
        backend: BackendAddr,
        /// Relative share of new flows, 0 to 10000 (0 drains).
        #[arg(long, default_value = "1", value_parser = parse_weight, allow_negative_numbers = true)]
        weight: u16,
        /// The backend's MAC (l2dsr VIPs), when it is not to be resolved.
        #[arg(long)]
        mac: Option<MacAddr>,
    },
    /// Remove a backend from a VIP (its tracked flows move to other backends).
    #[command(visible_alias = "rm")]
    Del { vip: VipKey, backend: BackendAddr },
    /// List a VIP's backends.
    #[command(visible_alias = "ls")]
    List {
        vip: VipKey,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set a backend's weight (0 drains it).
    Weight {
        vip: VipKey,
        backend: BackendAddr,
        #[arg(value_parser = parse_weight, allow_negative_numbers = true)]
        weight: u16,
    },
    /// Drain a backend: no new flows, tracked flows stay.
    Drain { vip: VipKey, backend: BackendAddr },
    /// Undo a drain.
    Undrain { vip: VipKey, backend: BackendAddr },
}

impl BackendCommand {
    pub fn run(&self, api: &ApiTarget) -> Result<(), CliError> {
        stdout_run(|out| self.run_to(api, out))
    }

    pub fn run_to(&self, api: &ApiTarget, out: &mut dyn Write) -> Result<(), CliError> {
        match self {
            BackendCommand::Add {
                vip,
                backend,
                weight,
                mac,
            } => {
                let request = BackendRequest {
                    address: backend.to_string(),
                    weight: Some(i64::from(*weight)),
                    mac: mac.map(|m| m.to_string()),
                };
                let path = format!("{}/backends", vip_path(vip));
                let reply: BackendReply = api.call_json("POST", &path, &request)?;
                writeln!(
                    out,
                    "backend {} added to vip {} (weight {}); version {}",
                    reply.backend.address, reply.vip, reply.backend.weight, reply.version
                )
                .map_err(io)
            }
            BackendCommand::Del { vip, backend } => {
                let done: Done = api.call("DELETE", &backend_path(vip, backend), None)?;
                writeln!(out, "{}; version {}", done.message, done.version).map_err(io)
            }
            BackendCommand::List { vip, json } => {
                let list: BackendList =
                    api.call("GET", &format!("{}/backends", vip_path(vip)), None)?;
                if *json {
                    return print_json(out, &list);
                }
                let mut rows = vec![vec![
                    "BACKEND".to_string(),
                    "WEIGHT".into(),
                    "STATE".into(),
                    "HEALTH".into(),
                    "MAC".into(),
                ]];
                for b in &list.backends {
                    let mut state = serde_json::to_value(b.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    if b.drained {
                        state.push_str(" (drained)");
                    }
                    rows.push(vec![
                        b.address.to_string(),
                        b.weight.to_string(),
                        state,
                        b.health.as_str().into(),
                        b.mac.map_or("-".into(), |m| m.to_string()),
                    ]);
                }
                write_table(out, &rows)?;
                if list.backends.is_empty() {
                    writeln!(
                        out,
                        "(no backends; add one with: fulcrum backend add {vip} ADDR)"
                    )
                    .map_err(io)?;
                }
                Ok(())
            }
            BackendCommand::Weight {
                vip,
                backend,
                weight,
            } => {
                let reply: BackendReply = api.call_json(
                    "PATCH",
                    &backend_path(vip, backend),
                    &WeightRequest {
                        weight: i64::from(*weight),
                    },
                )?;
                writeln!(
                    out,
                    "backend {} of vip {}: weight {}; version {}",
                    reply.backend.address, reply.vip, reply.backend.weight, reply.version
                )
                .map_err(io)
            }
            BackendCommand::Drain { vip, backend } | BackendCommand::Undrain { vip, backend } => {
                let action = if matches!(self, BackendCommand::Drain { .. }) {
                    "drain"
                } else {
                    "undrain"
                };
                let path = format!("{}/{action}", backend_path(vip, backend));
                let reply: BackendReply = api.call("POST", &path, None)?;
                writeln!(
                    out,
                    "backend {} of vip {} {action}ed; version {}",
                    reply.backend.address, reply.vip, reply.version
                )
                .map_err(io)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_checked_before_sending() {
        assert_eq!(parse_weight("0"), Ok(0));
        assert_eq!(parse_weight("10000"), Ok(10000));
        assert_eq!(
            parse_weight("10001").unwrap_err(),
            "weight 10001 is out of range; use 0 to 10000 (0 drains the backend)"
        );
        assert!(parse_weight("-1").unwrap_err().contains("out of range"));
        assert!(parse_weight("x").unwrap_err().contains("not a number"));
    }
}
