//! Output helpers shared by the commands: aligned text tables, pretty JSON, stdout.

use std::fmt::Write as _;
use std::io::Write;

use super::api::CliError;

pub(super) fn io(e: std::io::Error) -> CliError {
    CliError::Io(format!("cannot write the output: {e}"))
}

pub(super) fn stdout_run(
    f: impl FnOnce(&mut dyn Write) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    f(&mut lock)?;
    lock.flush().map_err(io)
}

pub(super) fn print_json<T: serde::Serialize>(
    out: &mut dyn Write,
    value: &T,
) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Io(e.to_string()))?;
    writeln!(out, "{text}").map_err(io)
}

pub(super) fn table_into(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

pub(super) fn write_table(out: &mut dyn Write, rows: &[Vec<String>]) -> Result<(), CliError> {
    let mut text = String::new();
    table_into(&mut text, rows);
    out.write_all(text.as_bytes()).map_err(io)
}
