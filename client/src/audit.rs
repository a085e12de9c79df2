//! `conclave audit export`: every node's audit trail and a fresh signed
//! head into one file; `conclave audit verify`: checks such a file offline
//! against the pinned roster and names the first bad entry of each node.

use crate::Failure;
use clap::Subcommand;
use conclave_client::{Client, Roster};
use conclave_proto::audit::AuditExport;
use serde_json::json;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Collects every pinned node's trail (with a head each signer signs
    /// over a fresh nonce) into FILE.
    Export {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Checks FILE offline: every signature, the chains, and that no
    /// entry is missing, reordered or altered. Exits 1 naming the first
    /// bad entry of a node, 0 if every trail checks.
    Verify {
        #[arg(long)]
        file: PathBuf,
        /// The roster file the signers run with (default: the client
        /// configuration's), e.g. for a compliance team without one.
        #[arg(long)]
        roster: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

impl AuditCommand {
    /// Whether output is JSON.
    pub fn json(&self) -> bool {
        match self {
            AuditCommand::Export { json, .. } | AuditCommand::Verify { json, .. } => *json,
        }
    }
}

/// Writes the export; refuses to overwrite a file.
pub async fn export(client: &Client, out: &PathBuf, json: bool) -> Result<(), Failure> {
    let export = client.audit_export().await?;
    let bytes = export.encode();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
        .map_err(|e| Failure::Usage(format!("--out {}: {e}", out.display())))?;
    let counts: Vec<_> = export.nodes.iter().map(|n| json!({"node": n.node, "entries": n.entries.len()})).collect();
    let human: Vec<(&str, String)> = vec![("file", out.display().to_string()), ("nodes", counts.len().to_string())];
    crate::print(json, json!({"file": out, "nodes": counts}), &human);
    Ok(())
}

/// Verifies a file against the roster.
pub fn verify(roster: &Roster, file: &PathBuf, json: bool) -> Result<(), Failure> {
    let bytes = std::fs::read(file).map_err(|e| Failure::Usage(format!("--file {}: {e}", file.display())))?;
    let export = AuditExport::decode(&bytes).map_err(|e| Failure::Usage(format!("--file {}: {e}", file.display())))?;
    let checked = roster.check_audit(&export);
    // A gap the signer itself declared checks, but entries are missing.
    let ok = checked.iter().all(|r| r.as_ref().is_ok_and(|s| s.lost.is_empty()));
    if json {
        let rows: Vec<_> = checked
            .iter()
            .map(|r| match r {
                Ok(s) => json!({"node": s.node, "ok": s.lost.is_empty(), "entries": s.entries, "last_seq": s.last_seq, "head_seq": s.head_seq, "signatures": s.signatures, "denials": s.denials, "lost": s.lost}),
                Err(fault) => json!({"ok": false, "fault": fault}),
            })
            .collect();
        out!("{}", json!({"ok": ok, "nodes": rows}));
    } else {
        for r in &checked {
            match r {
                Ok(s) => {
                    out!(
                        "{:<12} ok: {} entries, head at {}, {} signatures, {} denials",
                        s.node,
                        s.entries,
                        s.head_seq.map_or("(none)".to_string(), |h| h.to_string()),
                        s.signatures,
                        s.denials
                    );
                    for (first, last) in &s.lost {
                        out!("LOST: entries {first} to {last} of {}: the signer found its trail cut short by its host and said so", s.node);
                    }
                }
                Err(fault) => out!("BAD: {fault}"),
            }
        }
    }
    match ok {
        true => Ok(()),
        false => Err(Failure::Refused),
    }
}
