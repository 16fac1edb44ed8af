//! Writing rows to stdout as a table, JSON or CSV.
//!
//! stdout carries only the requested output, so `-o json | jq` always works; every
//! message for people goes to stderr.

use std::io::Write;

use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

use crate::args::Format;

/// A row that can also be shown in a table for people.
pub trait TableRow: Serialize {
    /// The column headers of the table.
    fn headers() -> &'static [&'static str];
    /// The cells of this row, in header order.
    fn cells(&self) -> Vec<String>;
}

/// Writes `rows` to `out` in `format`.
pub fn write_rows<R: TableRow>(
    out: &mut dyn Write,
    format: Format,
    rows: &[R],
) -> std::io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, rows)?;
            writeln!(out)
        }
        Format::Jsonl => {
            for row in rows {
                serde_json::to_writer(&mut *out, row)?;
                writeln!(out)?;
            }
            Ok(())
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(&mut *out);
            if rows.is_empty() {
                writer.write_record(R::headers())?;
            }
            for row in rows {
                writer.serialize(row)?;
            }
            writer.flush()
        }
        Format::Table => {
            let mut table = Table::new();
            table
                .load_preset(presets::UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Disabled)
                .set_header(R::headers().iter().copied());
            for row in rows {
                table.add_row(row.cells());
            }
            writeln!(out, "{table}")
        }
    }
}
