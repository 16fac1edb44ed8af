//! `cargo xtask completions` and `cargo xtask man`: shell completions and man pages,
//! generated from keyturn's real clap command (`keyturn_cli::command()`), so they can
//! never describe flags the binary does not have.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use clap_complete::Shell;

/// The binary's name, as completions register it and man pages title it.
const BIN: &str = "keyturn";

/// keyturn's command, built: global flags propagated to every subcommand, and clap's
/// `help` subcommand left out.
fn command() -> clap::Command {
    let mut command = keyturn_cli::command()
        .bin_name(BIN)
        .disable_help_subcommand(true);
    command.build();
    command
}

/// Every command of the tree with its names from the root down: `["keyturn"]`,
/// `["keyturn", "campaign"]`, `["keyturn", "campaign", "start"]`, …
fn commands(command: &clap::Command) -> Vec<(Vec<String>, clap::Command)> {
    fn walk(
        command: &clap::Command,
        path: Vec<String>,
        out: &mut Vec<(Vec<String>, clap::Command)>,
    ) {
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            let mut sub_path = path.clone();
            sub_path.push(sub.get_name().to_owned());
            walk(sub, sub_path, out);
        }
        out.push((path, command.clone()));
    }
    let mut out = Vec::new();
    walk(command, vec![BIN.to_owned()], &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Writes one completion script per shell clap_complete knows (bash, elvish, fish,
/// powershell, zsh) into `dir`, under the file names each shell expects. Returns them.
pub fn write_completions(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut command = command();
    Shell::value_variants()
        .iter()
        .map(|shell| {
            clap_complete::generate_to(*shell, &mut command, BIN, dir)
                .with_context(|| format!("cannot write the {shell} completions"))
        })
        .collect()
}

/// Writes one man page per command (`keyturn.1`, `keyturn-campaign-start.1`, …) into
/// `dir`. Returns them.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    commands(&command())
        .into_iter()
        .map(|(path, command)| {
            let file = dir.join(format!("{}.1", path.join("-")));
            let page = man_page(&path, command)?;
            std::fs::write(&file, page)
                .with_context(|| format!("cannot write {}", file.display()))?;
            Ok(file)
        })
        .collect()
}

/// One command's man page: clap_mangen's sections, then the command's examples (its
/// help's `after_help`) as an EXAMPLES section with the lines kept as they are.
fn man_page(path: &[String], command: clap::Command) -> Result<Vec<u8>> {
    let examples = command
        .get_after_long_help()
        .or(command.get_after_help())
        .map(|h| h.to_string());
    let sub_pages: Vec<String> = command
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| format!("{}-{}", path.join("-"), s.get_name()))
        .collect();
    let has_version = command.get_version().is_some();
    let man = clap_mangen::Man::new(command)
        .title(path.join("-"))
        .source(format!(
            "{BIN} {}",
            keyturn_cli::command().get_version().unwrap_or_default()
        ));
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    if !sub_pages.is_empty() {
        man.render_subcommands_section(&mut page)?;
    }
    if let Some(examples) = examples {
        page.extend_from_slice(b".SH EXAMPLES\n.nf\n");
        for line in examples
            .lines()
            .filter(|l| !l.starts_with("Example"))
            .map(str::trim)
        {
            page.extend_from_slice(roff_line(line).as_bytes());
            page.push(b'\n');
        }
        page.extend_from_slice(b".fi\n");
    }
    page.extend_from_slice(b".SH \"SEE ALSO\"\n");
    let mut see_also = sub_pages;
    if path.len() > 1 {
        see_also.insert(0, path[..path.len() - 1].join("-"));
    }
    see_also.push("the runbook, docs/runbook.md".to_owned());
    let see_also: Vec<String> = see_also
        .iter()
        .map(|page| {
            if page.starts_with(BIN) {
                format!("\\fB{}\\fR(1)", roff_line(page))
            } else {
                roff_line(page)
            }
        })
        .collect();
    page.extend_from_slice(see_also.join(", ").as_bytes());
    page.push(b'\n');
    if has_version {
        man.render_version_section(&mut page)?;
    }
    Ok(page)
}

/// A line of text made safe for roff: backslashes and minus signs escaped, and a line
/// that would start with a control character (`.` or `'`) protected.
fn roff_line(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// Where the assets go without `--out`: `<target>/assets/<kind>`.
fn default_dir(root: &Path, kind: &str) -> PathBuf {
    crate::target_dir(root).join("assets").join(kind)
}

/// The output directory of `[--out DIR]`.
fn out_dir(root: &Path, kind: &str, args: &[String], usage: &str) -> Result<PathBuf> {
    match args {
        [] => Ok(default_dir(root, kind)),
        [flag, dir] if flag == "--out" => Ok(PathBuf::from(dir)),
        _ => bail!("unknown {kind} arguments {args:?}\n\n{usage}"),
    }
}

/// `cargo xtask completions [--out DIR]`.
pub fn completions(root: &Path, args: &[String], usage: &str) -> Result<()> {
    let dir = out_dir(root, "completions", args, usage)?;
    let written = write_completions(&dir)?;
    eprintln!(
        "xtask: wrote {} completion scripts to {}",
        written.len(),
        dir.display()
    );
    for file in written {
        println!("{}", file.display());
    }
    Ok(())
}

/// `cargo xtask man [--out DIR]`.
pub fn man(root: &Path, args: &[String], usage: &str) -> Result<()> {
    let dir = out_dir(root, "man", args, usage)?;
    let written = write_man_pages(&dir)?;
    eprintln!(
        "xtask: wrote {} man pages to {}",
        written.len(),
        dir.display()
    );
    for file in written {
        println!("{}", file.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command's names, from `keyturn` down, and the names of all subcommands.
    fn expected() -> (Vec<String>, Vec<String>) {
        let commands = commands(&command());
        let pages = commands
            .iter()
            .map(|(path, _)| format!("{}.1", path.join("-")))
            .collect();
        let names = commands
            .iter()
            .filter(|(path, _)| path.len() > 1)
            .map(|(path, _)| path.last().unwrap().clone())
            .collect();
        (pages, names)
    }

    #[test]
    fn the_tree_has_every_command_nested_ones_included() {
        let (pages, _) = expected();
        for page in [
            "keyturn.1",
            "keyturn-inventory.1",
            "keyturn-run.1",
            "keyturn-campaign.1",
            "keyturn-campaign-start.1",
            "keyturn-campaign-list.1",
            "keyturn-journal-init.1",
        ] {
            assert!(pages.iter().any(|p| p == page), "{page} missing: {pages:?}");
        }
        assert!(
            !pages.iter().any(|p| p.contains("help")),
            "clap's help subcommand gets no page: {pages:?}"
        );
    }

    #[test]
    fn a_man_page_for_every_command_with_its_options_and_examples() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_man_pages(dir.path()).unwrap();
        let (mut pages, _) = expected();
        pages.sort();
        let mut names: Vec<String> = written
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, pages);
        for file in &written {
            let page = std::fs::read_to_string(file).unwrap();
            let name = file.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(page.contains(&format!("\n.TH {name} 1 ")), "{name}: {page}");
            for section in ["NAME", "SYNOPSIS", "OPTIONS", "EXAMPLES", "SEE ALSO"] {
                assert!(
                    page.contains(&format!(".SH {section}"))
                        || page.contains(&format!(".SH \"{section}\"")),
                    "{name} has no {section} section"
                );
            }
            // The global flags reach every page.
            assert!(page.contains("\\-\\-journal"), "{name} lacks --journal");
            assert!(page.contains("KEYTURN_JOURNAL"), "{name} lacks the env var");
        }
        let start = std::fs::read_to_string(dir.path().join("keyturn-campaign-start.1")).unwrap();
        assert!(
            start.contains("keyturn campaign start q3\\-rotation \\-\\-policy policy.toml\n"),
            "{start}"
        );
        assert!(start.contains("\\fBkeyturn\\-campaign\\fR(1)"), "{start}");
        let root = std::fs::read_to_string(dir.path().join("keyturn.1")).unwrap();
        assert!(root.contains("\\fBkeyturn\\-campaign\\fR(1)"), "{root}");
    }

    #[test]
    fn roff_lines_are_escaped() {
        assert_eq!(roff_line(r"a-b \x"), r"a\-b \ex");
        assert_eq!(roff_line(".[] | x"), r"\&.[] | x");
        assert_eq!(roff_line("'quoted'"), r"\&'quoted'");
    }

    #[test]
    fn completions_for_every_shell_mention_every_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_completions(dir.path()).unwrap();
        let mut files: Vec<String> = written
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "_keyturn",
                "_keyturn.ps1",
                "keyturn.bash",
                "keyturn.elv",
                "keyturn.fish"
            ]
        );
        let (_, names) = expected();
        for file in &written {
            let script = std::fs::read_to_string(file).unwrap();
            for name in &names {
                assert!(
                    script.contains(name.as_str()),
                    "{} does not mention {name}",
                    file.display()
                );
            }
            for flag in ["journal", "policy", "watch", "claim-ttl"] {
                // fish writes `-l watch`, the others `--watch`.
                assert!(
                    script.contains(&format!("--{flag}")) || script.contains(&format!("-l {flag}")),
                    "{} does not mention {flag}",
                    file.display()
                );
            }
        }
    }

    /// Sources the bash script in a bash subprocess: it registers a completion for
    /// `keyturn`, and that completion offers the subcommands and the nested ones.
    #[test]
    fn the_bash_completion_loads_and_completes() {
        let dir = tempfile::tempdir().unwrap();
        write_completions(dir.path()).unwrap();
        let script = dir.path().join("keyturn.bash");
        let complete = |words: &str, cword: usize| -> String {
            let program = format!(
                "set -e; source \"$1\"; complete -p keyturn; \
                 COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE=\"{words}\"; COMP_POINT=${{#COMP_LINE}}; \
                 _keyturn keyturn \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\""
            );
            let output = std::process::Command::new("bash")
                .args(["--norc", "--noprofile", "-c", &program, "bash"])
                .arg(&script)
                .output()
                .expect("bash runs (the CI machines have it)");
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(
                output.status.success(),
                "bash failed: {}\n{stdout}",
                String::from_utf8_lossy(&output.stderr)
            );
            stdout
        };
        let top = complete("keyturn ca", 1);
        assert!(top.starts_with("complete "), "{top}");
        assert!(top.lines().any(|l| l == "campaign"), "{top}");
        let nested = complete("keyturn campaign st", 2);
        assert!(nested.lines().any(|l| l == "start"), "{nested}");
        let flags = complete("keyturn run --wa", 2);
        assert!(flags.lines().any(|l| l == "--watch"), "{flags}");
    }
}
