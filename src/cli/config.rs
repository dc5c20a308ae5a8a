//! `fulcrum config show|apply`.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;

use super::api::{ApiTarget, CliError};
use super::table::{io, print_json, stdout_run};
use crate::control::messages::ApplyReport;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the running configuration (the token redacted), VIPs as they are now.
    Show,
    #[command(
        about = "Make a configuration file's [[vip]] tables the running ones, all at once: prints the changes, then applies them (VIPs and backends that stay keep their ids and drains)"
    )]
    Apply {
        /// The configuration file.
        file: PathBuf,
        /// Only print what would change.
        #[arg(long)]
        dry_run: bool,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
}

impl ConfigCommand {
    pub fn run(&self, api: &ApiTarget) -> Result<(), CliError> {
        stdout_run(|out| self.run_to(api, out))
    }

    pub fn run_to(&self, api: &ApiTarget, out: &mut dyn Write) -> Result<(), CliError> {
        match self {
            ConfigCommand::Show => {
                let answer = api.request("GET", "/v1/config", None)?;
                if answer.status != 200 {
                    return Err(api.refusal(&answer));
                }
                out.write_all(&answer.body).map_err(io)
            }
            ConfigCommand::Apply {
                file,
                dry_run,
                json,
            } => {
                // Checked here first, so a mistake is reported against the file's own name.
                crate::config::load(file).map_err(|e| CliError::Usage(e.to_string()))?;
                let text = std::fs::read(file)
                    .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
                let path = if *dry_run {
                    "/v1/config?dry_run=true"
                } else {
                    "/v1/config"
                };
                let report: ApplyReport =
                    api.call("POST", path, Some(("application/toml", &text)))?;
                if *json {
                    return print_json(out, &report);
                }
                for change in &report.changes {
                    writeln!(out, "{change}").map_err(io)?;
                }
                if report.changes.is_empty() {
                    writeln!(
                        out,
                        "nothing to change: the running VIPs match {}; version {}",
                        file.display(),
                        report.version
                    )
                    .map_err(io)
                } else if report.applied {
                    writeln!(
                        out,
                        "applied {} changes; version {}",
                        report.changes.len(),
                        report.version
                    )
                    .map_err(io)
                } else {
                    writeln!(
                        out,
                        "dry run: {} changes not applied (run without --dry-run to apply)",
                        report.changes.len()
                    )
                    .map_err(io)
                }
            }
        }
    }
}
