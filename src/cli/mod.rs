//! The command-line interface: subcommands that need no running daemon live here.

pub mod maglev;
