//! The deployment templates' linters: `cfn-lint` and `checkov` (pinned in
//! `deploy/requirements.txt`, installed into `target/deploy-venv`) on `deploy/*.yaml`.
//! `cargo xtask test` runs them; any finding fails it. A checkov check that does not
//! apply is skipped in the template itself (`Metadata: checkov: skip:`), with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The templates: every `deploy/*.yaml`, relative to the workspace root, sorted.
fn templates(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("deploy");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.strip_prefix(root).map(Path::to_path_buf).unwrap_or(p))
        .collect();
    found.sort();
    if found.is_empty() {
        bail!("no template in {}", dir.display());
    }
    Ok(found)
}

/// Creates the linters' venv if needed, then runs cfn-lint and checkov on the templates.
pub fn lint(root: &Path) -> Result<()> {
    let venv = crate::python_venv(
        root,
        "target/deploy-venv",
        "deploy/requirements.txt",
        "the deployment linters' venv (cfn-lint, checkov; about 40 s)",
    )?;
    let templates = templates(root)?;
    eprintln!("xtask: cfn-lint on {} template(s)", templates.len());
    // Warnings and informational findings fail too (cfn-lint exits non-zero on any).
    crate::run(
        Command::new(venv.join("bin/cfn-lint"))
            .current_dir(root)
            .args(&templates),
    )?;
    eprintln!("xtask: checkov on deploy/");
    // --skip-download and BC_SKIP_MAPPING: no call to the vendor's platform (nothing
    // leaves the machine); no check for a newer checkov either; --quiet --compact: only
    // failed checks are printed.
    crate::run(
        Command::new(venv.join("bin/checkov"))
            .current_dir(root)
            .env("BC_SKIP_MAPPING", "TRUE")
            .env("CKV_SKIP_PACKAGE_UPDATE_CHECK", "true")
            .args([
                "--directory",
                "deploy",
                "--framework",
                "cloudformation",
                "--quiet",
                "--compact",
                "--skip-download",
            ]),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_is_found() {
        let root = crate::workspace_root();
        let found = super::templates(&root).unwrap();
        assert_eq!(
            found,
            [
                std::path::PathBuf::from("deploy/member-role.yaml"),
                std::path::PathBuf::from("deploy/runner.yaml"),
            ]
        );
    }
}
