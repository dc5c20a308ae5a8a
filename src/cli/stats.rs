//! `fulcrum stats`: the counters, or live rates with `--watch`.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::Args;

use super::api::{ApiTarget, CliError};
use super::table::{io, print_json, stdout_run, table_into};
use crate::control::messages::StatsReport;

fn parse_interval(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds (e.g. 1 or 0.5)"))?;
    if !(0.01..=3600.0).contains(&v) {
        return Err(format!("{v} seconds is out of range (0.01 to 3600)"));
    }
    Ok(v)
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Refresh a table of rates per port, VIP and backend until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: stop after this many refreshes.
    #[arg(long, value_name = "N", requires = "watch")]
    pub count: Option<u64>,
    /// With --watch: seconds between refreshes.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_interval)]
    pub interval: f64,
    /// Print the API's JSON (one shot only).
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
}

impl StatsArgs {
    pub fn run(&self, api: &ApiTarget) -> Result<(), CliError> {
        let clear = std::io::stdout().is_terminal();
        stdout_run(|out| self.run_to(api, out, clear))
    }

    /// `clear`: redraw in place (a terminal) rather than print one table after another.
    pub fn run_to(
        &self,
        api: &ApiTarget,
        out: &mut dyn Write,
        clear: bool,
    ) -> Result<(), CliError> {
        let mut previous: StatsReport = api.call("GET", "/v1/stats", None)?;
        if !self.watch {
            if self.json {
                return print_json(out, &previous);
            }
            return write!(out, "{}", totals_text(&previous)).map_err(io);
        }
        let mut taken = Instant::now();
        let mut refreshes = 0;
        while self.count.is_none_or(|n| refreshes < n) {
            std::thread::sleep(Duration::from_secs_f64(self.interval));
            let current: StatsReport = api.call("GET", "/v1/stats", None)?;
            let now = Instant::now();
            let seconds = now.duration_since(taken).as_secs_f64().max(1e-3);
            if clear {
                write!(out, "\x1b[H\x1b[2J").map_err(io)?;
            } else if refreshes > 0 {
                writeln!(out).map_err(io)?;
            }
            write!(out, "{}", rates_text(&previous, &current, seconds)).map_err(io)?;
            out.flush().map_err(io)?;
            previous = current;
            taken = now;
            refreshes += 1;
        }
        Ok(())
    }
}

/// `fulcrum stats` without --watch: the counters.
pub fn totals_text(s: &StatsReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "snapshot version {}, {} workers, up {:.0} s",
        s.version, s.workers, s.uptime_secs
    );
    let mut rows = vec![vec![
        "PORT".to_string(),
        "DEVICE".into(),
        "RX PACKETS".into(),
        "RX BYTES".into(),
        "TX PACKETS".into(),
        "TX BYTES".into(),
        "TO KERNEL".into(),
        "FROM KERNEL".into(),
    ]];
    for p in &s.ports {
        rows.push(vec![
            p.port.to_string(),
            p.name.clone(),
            p.rx_packets.to_string(),
            p.rx_bytes.to_string(),
            p.tx_packets.to_string(),
            p.tx_bytes.to_string(),
            p.to_kernel_packets.to_string(),
            p.from_kernel_packets.to_string(),
        ]);
    }
    table_into(&mut out, &rows);
    let mut rows = vec![vec![
        "VIP / BACKEND".to_string(),
        "STATE".into(),
        "PACKETS".into(),
        "BYTES".into(),
    ]];
    for v in &s.vips {
        let state = if v.all_backends_down { "ALL DOWN" } else { "" };
        rows.push(vec![
            v.vip.to_string(),
            state.into(),
            v.packets.to_string(),
            v.bytes.to_string(),
        ]);
        for b in &v.backends {
            rows.push(vec![
                format!("  {}", b.backend),
                state_text(b.state),
                b.packets.to_string(),
                b.bytes.to_string(),
            ]);
        }
    }
    let _ = writeln!(out);
    table_into(&mut out, &rows);
    let drops: Vec<String> = s
        .drops
        .iter()
        .chain(&s.parse_errors)
        .filter(|d| d.count > 0)
        .map(|d| format!("{} {}", d.name, d.count))
        .collect();
    let _ = writeln!(
        out,
        "\ndrops: {}",
        if drops.is_empty() {
            "none".to_string()
        } else {
            drops.join(", ")
        }
    );
    let c = &s.conntrack;
    let _ = writeln!(
        out,
        "conntrack: {} flows, {} hits, {} misses, {} evictions ({} confirmed), {} expiries, {} repicks",
        c.flows, c.hits, c.misses, c.evictions, c.confirmed_evictions, c.expiries, c.repicks
    );
    let b = &s.burst_cycles;
    let _ = writeln!(
        out,
        "burst cycles: p50 {} p99 {} p99.9 {} max {} ({} bursts)",
        b.p50, b.p99, b.p999, b.max, b.count
    );
    out
}

fn state_text(state: crate::snapshot::BackendState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn rate(now: u64, before: u64, seconds: f64) -> f64 {
    now.saturating_sub(before) as f64 / seconds
}

fn human(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// One frame of `fulcrum stats --watch`: rates between two reports `seconds` apart.
pub fn rates_text(before: &StatsReport, now: &StatsReport, seconds: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fulcrum stats: snapshot version {}, {} workers, rates over {:.1} s",
        now.version, now.workers, seconds
    );
    let mut rows = vec![vec![
        "PORT".to_string(),
        "DEVICE".into(),
        "RX PPS".into(),
        "RX BIT/S".into(),
        "TX PPS".into(),
        "TX BIT/S".into(),
    ]];
    for p in &now.ports {
        let b = before.ports.iter().find(|q| q.port == p.port);
        let old = |f: fn(&crate::control::messages::PortStatsView) -> u64| b.map_or(0, f);
        rows.push(vec![
            p.port.to_string(),
            p.name.clone(),
            human(rate(p.rx_packets, old(|q| q.rx_packets), seconds)),
            human(8.0 * rate(p.rx_bytes, old(|q| q.rx_bytes), seconds)),
            human(rate(p.tx_packets, old(|q| q.tx_packets), seconds)),
            human(8.0 * rate(p.tx_bytes, old(|q| q.tx_bytes), seconds)),
        ]);
    }
    table_into(&mut out, &rows);
    let mut rows = vec![vec![
        "VIP / BACKEND".to_string(),
        "STATE".into(),
        "PPS".into(),
        "BIT/S".into(),
    ]];
    for v in &now.vips {
        let old = before.vips.iter().find(|o| o.vip == v.vip);
        let state = if v.all_backends_down { "ALL DOWN" } else { "" };
        rows.push(vec![
            v.vip.to_string(),
            state.into(),
            human(rate(v.packets, old.map_or(0, |o| o.packets), seconds)),
            human(8.0 * rate(v.bytes, old.map_or(0, |o| o.bytes), seconds)),
        ]);
        for b in &v.backends {
            let ob = old.and_then(|o| o.backends.iter().find(|x| x.backend == b.backend));
            rows.push(vec![
                format!("  {}", b.backend),
                state_text(b.state),
                human(rate(b.packets, ob.map_or(0, |o| o.packets), seconds)),
                human(8.0 * rate(b.bytes, ob.map_or(0, |o| o.bytes), seconds)),
            ]);
        }
    }
    let _ = writeln!(out);
    table_into(&mut out, &rows);
    let dropped: u64 = now.drops.iter().map(|d| d.count).sum();
    let dropped_before: u64 = before.drops.iter().map(|d| d.count).sum();
    let _ = writeln!(
        out,
        "\ndrops/s: {}",
        human(rate(dropped, dropped_before, seconds))
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::VipKey;

    #[test]
    fn watch_rates_are_deltas_over_time() {
        use crate::control::messages::{BackendStats, PortStatsView, VipStats};
        let vip: VipKey = "192.0.2.10:80/tcp".parse().unwrap();
        let report = |packets: u64| StatsReport {
            ports: vec![PortStatsView {
                port: 0,
                name: "net_tap0".into(),
                rx_packets: packets,
                rx_bytes: packets * 100,
                ..Default::default()
            }],
            vips: vec![VipStats {
                vip,
                packets,
                bytes: packets * 100,
                all_backends_down: false,
                backends: vec![BackendStats {
                    backend: "198.51.100.7".parse().unwrap(),
                    state: crate::snapshot::BackendState::Active,
                    packets,
                    bytes: packets * 100,
                }],
            }],
            ..Default::default()
        };
        let text = rates_text(&report(1000), &report(3000), 2.0);
        let port_line = text.lines().find(|l| l.starts_with("0 ")).unwrap();
        let cells: Vec<&str> = port_line.split_whitespace().collect();
        assert_eq!(
            cells,
            vec!["0", "net_tap0", "1.0k", "800.0k", "0", "0"],
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["198.51.100.7", "active", "1.0k", "800.0k"]),
            "{text}"
        );
    }
}
