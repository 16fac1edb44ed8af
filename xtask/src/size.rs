//! The size limits of the product's sources (`crates/*/src`): no file over
//! [`MAX_FILE_LINES`] lines and no function over [`MAX_FN_LINES`], tests aside (a
//! `#[cfg(test)]` module, inline or a `tests.rs` file of its own). Read with `syn`, so
//! that braces in strings, comments and macros never miscount.
//!
//! The sources that broke a limit when it was set are listed in [`DEBTS`] with their
//! size then: each may shrink, none may grow, and no new one may appear. Paying one off
//! (issue 16's split of the campaign engine) removes its line.

use std::path::{Path, PathBuf};

use syn::spanned::Spanned;

/// The most lines a source file may have, its tests aside.
pub const MAX_FILE_LINES: usize = 800;
/// The most lines a function may have, from `fn` to its closing brace.
pub const MAX_FN_LINES: usize = 80;

/// Known excesses: (file, function or `""` for the file itself, lines when listed).
const DEBTS: &[(&str, &str, usize)] = &[
    ("crates/cli/src/commands/report.rs", "to_html", 151),
    ("crates/cli/src/commands/run.rs", "run", 92),
    ("crates/journal/src/dynamo.rs", "", 1555),
    ("crates/journal/src/dynamo.rs", "transact", 123),
    ("crates/journal/src/sqlite.rs", "", 844),
    ("crates/journal/src/sqlite.rs", "open_connection", 103),
    ("crates/planner/src/policy.rs", "", 830),
    ("crates/planner/src/rotation/decide.rs", "decide_key", 102),
    ("crates/planner/src/rotation/state.rs", "evolve", 172),
    ("crates/sim/src/lib.rs", "simulate", 172),
    ("crates/sim/src/lib.rs", "seed_organization", 120),
    ("crates/worker/src/campaign/report.rs", "compute", 182),
    ("crates/worker/src/campaign/run.rs", "", 1942),
    ("crates/worker/src/campaign/run.rs", "run", 101),
    ("crates/worker/src/campaign/run.rs", "run_account", 197),
    ("crates/worker/src/campaign/run.rs", "drive", 165),
    ("crates/worker/src/campaign/run.rs", "act", 262),
    ("crates/worker/src/campaign/run.rs", "replace", 121),
    ("crates/worker/src/campaign/run.rs", "reactivate", 88),
    ("crates/worker/src/steps.rs", "", 878),
];

/// One source over a limit: a file (`item` empty) or a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excess {
    /// The file, relative to the workspace root.
    pub file: String,
    /// The function's name, or `""` for the file.
    pub item: String,
    /// Its lines.
    pub lines: usize,
}

/// The files and functions of one source text over the limits.
pub fn excesses(file: &str, text: &str) -> Result<Vec<Excess>, syn::Error> {
    let parsed = syn::parse_file(text)?;
    let mut found = Vec::new();
    let test_lines: usize = parsed
        .items
        .iter()
        .filter(|item| is_test_module(item))
        .map(|item| lines_of(item.span()))
        .sum();
    let counted = text.lines().count().saturating_sub(test_lines);
    if counted > MAX_FILE_LINES {
        found.push(Excess {
            file: file.to_owned(),
            item: String::new(),
            lines: counted,
        });
    }
    let mut functions = Vec::new();
    functions_in(&parsed.items, &mut functions);
    found.extend(
        functions
            .into_iter()
            .filter(|(_, lines)| *lines > MAX_FN_LINES)
            .map(|(name, lines)| Excess {
                file: file.to_owned(),
                item: name,
                lines,
            }),
    );
    Ok(found)
}

/// Every function of the items, with its length, test modules skipped.
fn functions_in(items: &[syn::Item], out: &mut Vec<(String, usize)>) {
    for item in items {
        match item {
            syn::Item::Fn(f) => out.push(function(&f.sig, f.block.span())),
            syn::Item::Impl(block) => {
                for member in &block.items {
                    if let syn::ImplItem::Fn(f) = member {
                        out.push(function(&f.sig, f.block.span()));
                    }
                }
            }
            syn::Item::Trait(t) => {
                for member in &t.items {
                    if let syn::TraitItem::Fn(f) = member
                        && let Some(body) = &f.default
                    {
                        out.push(function(&f.sig, body.span()));
                    }
                }
            }
            syn::Item::Mod(m) if !is_test_module(item) => {
                if let Some((_, inner)) = &m.content {
                    functions_in(inner, out);
                }
            }
            _ => {}
        }
    }
}

/// A function's name and its lines, from its signature to its body's closing brace.
fn function(sig: &syn::Signature, body: proc_macro2::Span) -> (String, usize) {
    let lines = body.end().line + 1 - sig.span().start().line;
    (sig.ident.to_string(), lines)
}

fn lines_of(span: proc_macro2::Span) -> usize {
    span.end().line + 1 - span.start().line
}

/// Whether the item is `#[cfg(test)] mod …`.
fn is_test_module(item: &syn::Item) -> bool {
    let syn::Item::Mod(m) = item else {
        return false;
    };
    m.attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Ident>()
                .is_ok_and(|arg| arg == "test")
    })
}

/// The product's source files, test-module files (`tests.rs`) aside.
fn sources(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .map(|entry| entry.unwrap().path().join("src"))
        .collect();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// What breaks the limits against the known debts: a new excess, or a debt that grew.
/// Also returns the debts paid off (under the limit now), which should leave the list.
fn judge(found: &[Excess], debts: &[(&str, &str, usize)]) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    for excess in found {
        let what = if excess.item.is_empty() {
            format!(
                "{} has {} lines (at most {MAX_FILE_LINES})",
                excess.file, excess.lines
            )
        } else {
            format!(
                "{}: fn {} has {} lines (at most {MAX_FN_LINES})",
                excess.file, excess.item, excess.lines
            )
        };
        match debts
            .iter()
            .find(|(file, item, _)| *file == excess.file && *item == excess.item)
        {
            None => problems.push(what),
            Some((_, _, listed)) if excess.lines > *listed => {
                problems.push(format!("{what}, more than the {listed} it had when listed"));
            }
            Some(_) => {}
        }
    }
    let paid = debts
        .iter()
        .filter(|(file, item, _)| !found.iter().any(|e| e.file == *file && e.item == *item))
        .map(|(file, item, _)| format!("{file} {item}"))
        .collect();
    (problems, paid)
}

#[test]
fn sources_keep_their_size_limits() {
    let root = crate::workspace_root();
    let mut found = Vec::new();
    for path in sources(&root) {
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        found.extend(excesses(&file, &text).unwrap_or_else(|e| panic!("{file}: {e}")));
    }
    let (problems, paid) = judge(&found, DEBTS);
    assert!(
        problems.is_empty(),
        "sources over the size limits (split them; see docs/architecture.md):\n{}",
        problems.join("\n")
    );
    assert!(
        paid.is_empty(),
        "paid off, remove from xtask/src/size.rs DEBTS: {}",
        paid.join(", ")
    );
}

#[test]
fn the_size_check_catches_a_long_file_and_a_long_function_but_not_tests() {
    let body = "    let x = 1;\n".repeat(MAX_FN_LINES);
    let long_fn = format!("fn long() {{\n{body}}}\n");
    let short_fn = "impl S {\n    fn short(&self) -> &str {\n        \"}}}{{\"\n    }\n}\n";
    let tests = format!(
        "#[cfg(test)]\nmod tests {{\n    fn huge() {{\n{}    }}\n}}\n",
        body.repeat(12)
    );
    let text = format!("{long_fn}{short_fn}{tests}");
    let found = excesses("crates/x/src/lib.rs", &text).unwrap();
    assert_eq!(
        found,
        [Excess {
            file: "crates/x/src/lib.rs".into(),
            item: "long".into(),
            lines: MAX_FN_LINES + 2,
        }],
        "the long function only: the test module counts neither as lines nor as functions"
    );
    let padding = "// a line\n".repeat(MAX_FILE_LINES);
    let found = excesses("crates/x/src/big.rs", &format!("{padding}{short_fn}")).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].item.as_str(), found[0].lines),
        ("", MAX_FILE_LINES + 5)
    );

    // Against the debts: a new excess fails, a listed one may not grow, a paid one is named.
    let long = |lines| Excess {
        file: "f.rs".into(),
        item: "long".into(),
        lines,
    };
    assert_eq!(judge(&[long(90)], &[]).0.len(), 1, "a new excess");
    assert!(judge(&[long(90)], &[("f.rs", "long", 90)]).0.is_empty());
    assert!(judge(&[long(85)], &[("f.rs", "long", 90)]).0.is_empty());
    assert_eq!(
        judge(&[long(91)], &[("f.rs", "long", 90)]).0.len(),
        1,
        "grew"
    );
    assert_eq!(
        judge(&[], &[("f.rs", "long", 90)]).1,
        ["f.rs long"],
        "paid off"
    );
}
