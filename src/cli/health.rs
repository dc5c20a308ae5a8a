//! `fulcrum health`: the health-check state of every backend.

use std::io::Write;

use clap::Args;

use super::api::{ApiTarget, CliError};
use super::table::{io, print_json, stdout_run, write_table};
use crate::addr::VipKey;
use crate::control::messages::{HealthCheckKindName, HealthReport, HealthStatus};

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Only this VIP (ADDR:PORT/PROTO).
    pub vip: Option<VipKey>,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

impl HealthArgs {
    pub fn run(&self, api: &ApiTarget) -> Result<(), CliError> {
        stdout_run(|out| self.run_to(api, out))
    }

    pub fn run_to(&self, api: &ApiTarget, out: &mut dyn Write) -> Result<(), CliError> {
        let mut report: HealthReport = api.call("GET", "/v1/health", None)?;
        if let Some(vip) = &self.vip {
            report.vips.retain(|v| v.vip == *vip);
            if report.vips.is_empty() {
                return Err(CliError::Api {
                    status: 404,
                    message: format!("vip {vip} does not exist (try: fulcrum vip list)"),
                });
            }
        }
        if self.json {
            return print_json(out, &report);
        }
        let mut rows = vec![vec![
            "VIP / BACKEND".to_string(),
            "HEALTH".into(),
            "TARGET".into(),
            "FOR".into(),
            "CHECKS".into(),
            "FAILED".into(),
            "LAST ERROR".into(),
        ]];
        for v in &report.vips {
            let check = match &v.healthcheck {
                None => "no health check".to_string(),
                Some(h) => format!(
                    "{} every {} ms, rise {}, fall {}",
                    match h.kind {
                        HealthCheckKindName::Tcp => "tcp",
                        HealthCheckKindName::Http => "http",
                    },
                    h.interval_ms,
                    h.rise,
                    h.fall
                ),
            };
            rows.push(vec![
                v.vip.to_string(),
                String::new(),
                check,
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            for b in &v.backends {
                rows.push(vec![
                    format!("  {}", b.address),
                    b.status.as_str().to_string(),
                    b.target.clone().unwrap_or_else(|| "-".into()),
                    b.since_secs.map_or("-".into(), |s| format!("{s:.0}s")),
                    b.checks.to_string(),
                    b.failures.to_string(),
                    b.last_error.clone().unwrap_or_default(),
                ]);
            }
        }
        write_table(out, &rows)?;
        for v in report.vips.iter().filter(|v| v.all_backends_down) {
            writeln!(
                out,
                "WARNING: every backend of vip {} is down; fulcrum keeps sending to them rather than dropping the VIP's traffic",
                v.vip
            )
            .map_err(io)?;
        }
        let down = report
            .vips
            .iter()
            .flat_map(|v| &v.backends)
            .filter(|b| b.status == HealthStatus::Down)
            .count();
        if down > 0 {
            writeln!(out, "{down} backend(s) down").map_err(io)?;
        }
        Ok(())
    }
}
