//! Nitro mode's settings: the KMS key that seals shares, and what a peer's
//! attestation document must show to be admitted (AWS Nitro Enclaves).

use conclave_proto::link::LinkAddr;
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
    kms_region: String,
    #[serde(default = "crate::kms::default_proxy")]
    kms_proxy: LinkAddr,
    kms_ca_file: Option<PathBuf>,
    root_ca_file: Option<PathBuf>,
    #[serde(default)]
    expected_pcrs: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    allow_debug_enclaves: bool,
}

/// Validated nitro settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NitroConfig {
    /// The KMS key whose data keys seal this node's shares, as its full key
    /// ARN (`arn:aws:kms:REGION:ACCOUNT:key/ID`); its key policy releases
    /// them only to an enclave with the expected PCRs. Every KMS answer
    /// must name exactly this key.
    pub kms_key_id: String,
    /// The key's region (`kms.<region>.amazonaws.com`).
    pub kms_region: String,
    /// Where the enclave's TLS connection to KMS goes out: AWS's
    /// vsock-proxy on the parent (`vsock:3:8000`), which forwards bytes.
    pub kms_proxy: LinkAddr,
    /// Trust this CA for KMS instead of Amazon's roots (a private endpoint).
    pub kms_ca_file: Option<PathBuf>,
    /// The root a peer's attestation must chain to; `None` is the AWS Nitro
    /// root built into the signer (pinned by its fingerprint).
    pub root_ca_file: Option<PathBuf>,
    /// Per PCR index, values a peer may show besides this enclave's own
    /// (which are always admitted): the other image of a rolling upgrade.
    pub expected_pcrs: BTreeMap<u8, Vec<[u8; PCR_BYTES]>>,
    /// Admit peers whose documents come from debug-mode enclaves (all-zero
    /// PCRs). Never in production: a debug enclave's memory is readable
    /// from its parent instance.
    pub allow_debug_enclaves: bool,
}

impl RawNitro {
    pub(crate) fn validate(self) -> Result<NitroConfig, String> {
        check_key_arn(&self.kms_key_id, &self.kms_region)?;
        let mut expected_pcrs = BTreeMap::new();
        for (index, values) in self.expected_pcrs {
            let index: u8 =
                index.parse().ok().filter(|i| ALLOWED_PCRS.contains(i)).ok_or_else(|| format!("expected_pcrs: PCR {index:?} is not one of 0, 1, 2, 8"))?;
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
        // An image is identified by all three; listing some would admit
        // any kernel or application with a known PCR0.
        if !expected_pcrs.is_empty() {
            if let Some(missing) = REQUIRED_PCRS.iter().find(|i| !expected_pcrs.contains_key(i)) {
                return Err(format!("expected_pcrs: PCR {missing} is required with the others (0, 1 and 2 identify an image)"));
            }
        }
        let region_ok = !self.kms_region.is_empty() && self.kms_region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !region_ok {
            return Err(format!("kms_region {:?}: a region name such as eu-west-1", self.kms_region));
        }
        Ok(NitroConfig {
            kms_key_id: self.kms_key_id,
            kms_region: self.kms_region,
            kms_proxy: self.kms_proxy,
            kms_ca_file: self.kms_ca_file,
            root_ca_file: self.root_ca_file,
            expected_pcrs,
            allow_debug_enclaves: self.allow_debug_enclaves,
        })
    }
}

/// A KMS key named exactly: a full key ARN in `region`. An alias or a bare
/// key id is resolved by KMS in the account of whoever signs the call
/// (the host's instance role), so a host could point it at a key it
/// controls; an ARN names one key in one account.
fn check_key_arn(key: &str, region: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("kms_key_id {key:?}: {why}; give the key's full ARN, arn:aws:kms:{region}:ACCOUNT:key/KEY-ID"));
    let parts: Vec<&str> = key.split(':').collect();
    let [arn, partition, service, key_region, account, resource] = parts[..] else {
        return bad("not a key ARN");
    };
    if arn != "arn" || !partition.starts_with("aws") || service != "kms" {
        return bad("not a KMS ARN");
    }
    if key_region != region {
        return bad(&format!("the key is in {key_region}, kms_region is {region}"));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return bad("the account is not 12 digits");
    }
    let Some(id) = resource.strip_prefix("key/") else {
        return bad("an alias ARN, not a key ARN");
    };
    let uuid = id.len() == 36 && id.bytes().enumerate().all(|(i, b)| if [8, 13, 18, 23].contains(&i) { b == b'-' } else { b.is_ascii_hexdigit() });
    let multi_region = id.len() == 34 && id.starts_with("mrk-") && id[4..].bytes().all(|b| b.is_ascii_hexdigit());
    if !uuid && !multi_region {
        return bad("the key id is not a KMS key id");
    }
    Ok(())
}
