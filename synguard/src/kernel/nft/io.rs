//! Running `nft`: a batch applied as one transaction, the table looked up, and nft's
//! failures as one-line errors with the usual cause.

use std::io::{self, Write as _};
use std::process::{Command, Stdio};

use nftables::helper::{self, NftablesError};
use nftables::schema::{NfListObject, NfObject, Nftables};
use thiserror::Error;

use crate::kernel::nft::rules::{TABLE, to_nft_json};

/// Found through PATH, like the `nftables` crate does.
const NFT: &str = "nft";
/// When nft fails here with ENOENT or EOPNOTSUPP, a kernel feature is missing.
pub(super) const INSTALLING: &str = "installing the synguard table";

#[derive(Debug, Error)]
pub enum NftError {
    #[error(
        "the `nft` command was not found in PATH: install nftables (nft 0.9.3 or newer, with JSON support)"
    )]
    NftMissing,
    #[error("running `nft`")]
    Exec(#[source] io::Error),
    #[error(
        "table `inet {TABLE}` already exists: another synguard is running in this network namespace, or one crashed and left it behind (remove it with `nft delete table inet {TABLE}`)"
    )]
    TableExists,
    #[error("nft failed while {doing}: {stderr}{hint}")]
    Failed {
        doing: &'static str,
        stderr: String,
        hint: &'static str,
    },
    #[error("unexpected output from `nft -j`")]
    Output(#[source] NftablesError),
}

/// `nft list table inet synguard` (no handles), or `None` if the table is gone: what a
/// check compares with the listing taken after synguard's own last change.
pub(super) fn table_listing() -> Result<Option<String>, NftError> {
    if !table_exists()? {
        return Ok(None);
    }
    let output = Command::new(NFT)
        .args(["list", "table", "inet", TABLE])
        .output()
        .map_err(exec_error)?;
    if !output.status.success() {
        return Err(failed(
            "listing the synguard table",
            &String::from_utf8_lossy(&output.stderr),
        ));
    }
    Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
}

pub(super) fn table_exists() -> Result<bool, NftError> {
    let listed = helper::get_current_ruleset_with_args(Some(NFT), ["list", "tables", "inet"])
        .map_err(|e| nft_error(e, "listing tables"))?;
    Ok(listed.objects.iter().any(
        |object| matches!(object, NfObject::ListObject(NfListObject::Table(t)) if t.name == TABLE),
    ))
}

/// Runs `nft -j -f -` with the batch on stdin. Not `helper::apply_ruleset`: in nftables
/// 0.6.3 it leaves nft's stderr attached to ours and reports an empty message, so the
/// daemon could neither keep its error on one line nor say why nft refused.
pub(super) fn apply(ruleset: &Nftables<'_>, doing: &'static str) -> Result<(), NftError> {
    let json = to_nft_json(ruleset).to_string();
    let mut child = Command::new(NFT)
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(exec_error)?;
    let written = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(json.as_bytes());
    // Wait even if the write failed, so no zombie is left; nft's exit status explains more
    // than a broken pipe.
    let output = child.wait_with_output().map_err(exec_error)?;
    if !output.status.success() {
        return Err(failed(doing, &String::from_utf8_lossy(&output.stderr)));
    }
    written.map_err(exec_error)
}

fn exec_error(err: io::Error) -> NftError {
    if err.kind() == io::ErrorKind::NotFound {
        NftError::NftMissing
    } else {
        NftError::Exec(err)
    }
}

/// nft's only error channel is its text; the hints name the usual causes.
fn failed(doing: &'static str, stderr: &str) -> NftError {
    let hint = if stderr.contains("Operation not permitted") {
        " (run as root or with CAP_NET_ADMIN)"
    } else if doing == INSTALLING
        && (stderr.contains("No such file or directory")
            || stderr.contains("Operation not supported"))
    {
        " (the kernel may lack nftables synproxy or conntrack support: nft_synproxy, nft_ct, nf_conntrack)"
    } else {
        ""
    };
    NftError::Failed {
        doing,
        stderr: one_line(stderr),
        hint,
    }
}

fn nft_error(err: NftablesError, doing: &'static str) -> NftError {
    match err {
        NftablesError::NftExecution { inner, .. } => exec_error(inner),
        NftablesError::NftFailed { stderr, .. } => failed(doing, &stderr),
        other => NftError::Output(other),
    }
}

/// nft prints multi-line diagnostics; the daemon's errors are one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_errors_become_one_line() {
        assert_eq!(
            one_line(
                "Error: Could not process rule: No such file or directory\n\nadd rule ...\n   ^^^\n"
            ),
            "Error: Could not process rule: No such file or directory | add rule ... | ^^^"
        );
    }
}
