//! Nitro mode's settings: the KMS key that seals shares, and what a peer's
//! attestation document must show to be admitted (AWS Nitro Enclaves).

use std::collections::BTreeMap;
use std::path::PathBuf;

/// PCRs that identify an enclave image: PCR0 (image), PCR1 (kernel and
/// boot ramfs), PCR2 (application). PCR8 (signing certificate) may be
/// added; other PCRs say nothing stable about the code.
const REQUIRED_PCRS: [u8; 3] = [0, 1, 2];
const ALLOWED_PCRS: [u8; 4] = [0, 1, 2, 8];
/// Nitro PCRs are SHA-384.
const PCR_BYTES: usize = 48;

/// The `[nitro]` section as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNitro {
    kms_key_id: String,
    root_ca_file: Option<PathBuf>,
    expected_pcrs: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    allow_debug_enclaves: bool,
}

/// Validated nitro settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NitroConfig {
    /// The KMS key whose data keys seal this node's shares; its key policy
    /// releases them only to an enclave with the expected PCRs.
    pub kms_key_id: String,
    /// The root a peer's attestation must chain to; `None` is the AWS Nitro
    /// root built into the signer (pinned by its fingerprint).
    pub root_ca_file: Option<PathBuf>,
    /// Per PCR index, the values a peer may show (several during a rolling
    /// upgrade from one image to the next).
    pub expected_pcrs: BTreeMap<u8, Vec<[u8; PCR_BYTES]>>,
    /// Admit peers whose documents come from debug-mode enclaves (all-zero
    /// PCRs). Never in production: a debug enclave's memory is readable
    /// from its parent instance.
    pub allow_debug_enclaves: bool,
}

impl RawNitro {
    pub(crate) fn validate(self) -> Result<NitroConfig, String> {
        let key = &self.kms_key_id;
        let key_ok = key.starts_with("arn:aws:kms:") || key.starts_with("alias/") || (key.len() == 36 && key.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
        if !key_ok {
            return Err(format!("kms_key_id {key:?}: a key ARN, key id or alias/NAME"));
        }
        let mut expected_pcrs = BTreeMap::new();
        for (index, values) in self.expected_pcrs {
            let index: u8 = index.parse().ok().filter(|i| ALLOWED_PCRS.contains(i)).ok_or_else(|| format!("expected_pcrs: PCR {index:?} is not one of 0, 1, 2, 8"))?;
            if values.is_empty() {
                return Err(format!("expected_pcrs.{index}: list at least one value"));
            }
            let values = values
                .iter()
                .map(|hex_value| {
                    let mut pcr = [0u8; PCR_BYTES];
                    hex::decode_to_slice(hex_value, &mut pcr).map_err(|_| format!("expected_pcrs.{index}: {hex_value:?} is not {PCR_BYTES} bytes of hex"))?;
                    if pcr == [0u8; PCR_BYTES] && !self.allow_debug_enclaves {
                        return Err(format!("expected_pcrs.{index}: all zeros is a debug-mode enclave; set allow_debug_enclaves = true to admit one"));
                    }
                    Ok(pcr)
                })
                .collect::<Result<Vec<_>, String>>()?;
            expected_pcrs.insert(index, values);
        }
        if let Some(missing) = REQUIRED_PCRS.iter().find(|i| !expected_pcrs.contains_key(i)) {
            return Err(format!("expected_pcrs: PCR {missing} is required (0, 1 and 2 identify the image)"));
        }
        Ok(NitroConfig { kms_key_id: self.kms_key_id, root_ca_file: self.root_ca_file, expected_pcrs, allow_debug_enclaves: self.allow_debug_enclaves })
    }
}
