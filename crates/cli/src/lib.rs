//! keyturn's command-line definition, as a library: the `keyturn` binary parses with it,
//! and `cargo xtask completions|man` generates shell completions and man pages from it.
//!
//! Only the clap structures live here; the commands stay in the binary.

pub mod args;

/// keyturn's whole clap command tree, as the binary parses it.
pub fn command() -> clap::Command {
    <args::Cli as clap::CommandFactory>::command()
}
