//! One module per command; `run` dispatches.

mod inventory;
mod journal;

use crate::args::{Cli, Command, JournalCommand};
use crate::exit::Outcome;

/// Runs the command the user asked for.
pub async fn run(cli: Cli) -> Outcome {
    match cli.command {
        Command::Inventory(args) => inventory::run(args).await,
        Command::Journal(JournalCommand::Init) => journal::init(&cli.journal).await,
    }
}
