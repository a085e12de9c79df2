//! How many unused presignatures (ECDSA) or nonce pairs (EdDSA) a pool
//! keeps: signers bound what they make by it, hosts' keepers aim for it.
//! `presign_pool` in `enclave.toml` and `host.toml` is the default, and a
//! `[presign_pools]` table sets it per wallet. ECDSA pools serve the root
//! key, and the derivation paths a `[presign_paths]` table declares for a
//! wallet (CGGMP24 fixes a presignature's path when it is made).

use crate::WalletId;
use std::collections::BTreeMap;

/// The largest pool: each unused presignature is about 1.4 KB sealed per
/// signer, and a host can make a signer fill its pools up to this.
pub const MAX_POOL: u32 = 1024;

/// Most paths declared for one wallet (each is a pool per signer set).
pub const MAX_PATHS: usize = 16;

/// Pool sizes: a default and per-wallet overrides (0: no pool); and the
/// paths declared per wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSizes {
    default: u32,
    wallets: BTreeMap<WalletId, u32>,
    paths: BTreeMap<WalletId, Vec<Vec<u32>>>,
}

/// A pool setting out of range.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {why}")]
pub struct PoolSizeError {
    /// Which setting.
    pub what: String,
    /// What is wrong with it.
    pub why: String,
}

impl PoolSizes {
    /// Checks every size.
    pub fn new(default: u32, wallets: BTreeMap<WalletId, u32>) -> Result<PoolSizes, PoolSizeError> {
        let out_of_range = |what: String, size: u32| PoolSizeError { what, why: format!("{size}, must be 0 to {MAX_POOL}") };
        if default > MAX_POOL {
            return Err(out_of_range("presign_pool".into(), default));
        }
        if let Some((wallet, &size)) = wallets.iter().find(|(_, &size)| size > MAX_POOL) {
            return Err(out_of_range(format!("presign_pools.{wallet}"), size));
        }
        Ok(PoolSizes { default, wallets, paths: BTreeMap::new() })
    }

    /// Declares derivation paths (`m/0/7`, non-hardened) whose pools are
    /// kept beside the root key's, per wallet.
    pub fn with_paths(mut self, paths: BTreeMap<WalletId, Vec<String>>) -> Result<PoolSizes, PoolSizeError> {
        for (wallet, declared) in paths {
            let what = format!("presign_paths.{wallet}");
            if declared.len() > MAX_PATHS {
                return Err(PoolSizeError { what, why: format!("{} paths, at most {MAX_PATHS}", declared.len()) });
            }
            let mut parsed = Vec::with_capacity(declared.len());
            for p in &declared {
                let path = crate::request::parse_path(p).map_err(|why| PoolSizeError { what: what.clone(), why })?;
                if path.is_empty() || parsed.contains(&path) {
                    return Err(PoolSizeError { what, why: format!("{p:?}: the root key always has its pool, and a path is named once") });
                }
                parsed.push(path);
            }
            self.paths.insert(wallet, parsed);
        }
        Ok(self)
    }

    /// The derivation paths declared for `wallet`'s pools (besides the root).
    pub fn paths_of(&self, wallet: &WalletId) -> &[Vec<u32>] {
        self.paths.get(wallet).map_or(&[], Vec::as_slice)
    }

    /// Whether a request for `wallet` at `path` may take a presignature:
    /// the root key, or a declared path.
    pub fn serves(&self, wallet: &WalletId, path: &[u32]) -> bool {
        self.of(wallet) > 0 && (path.is_empty() || self.paths_of(wallet).iter().any(|p| p == path))
    }

    /// The size of `wallet`'s pools.
    pub fn of(&self, wallet: &WalletId) -> u32 {
        self.wallets.get(wallet).copied().unwrap_or(self.default)
    }

    /// Whether any wallet may have a pool.
    pub fn any(&self) -> bool {
        self.default > 0 || self.wallets.values().any(|&size| size > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wallet_overrides_the_default_within_bounds() {
        let hot = WalletId::new("hot").unwrap();
        let sizes = PoolSizes::new(0, [(hot.clone(), 16)].into()).unwrap();
        assert_eq!((sizes.of(&hot), sizes.of(&WalletId::new("cold").unwrap())), (16, 0));
        assert!(sizes.any());
        assert!(!PoolSizes::new(0, BTreeMap::new()).unwrap().any());
        assert_eq!(PoolSizes::new(MAX_POOL + 1, BTreeMap::new()).unwrap_err().what, "presign_pool");
        assert_eq!(PoolSizes::new(4, [(hot.clone(), MAX_POOL + 1)].into()).unwrap_err().what, "presign_pools.hot");

        let declared =
            |paths: &[&str]| PoolSizes::new(4, BTreeMap::new()).unwrap().with_paths([(hot.clone(), paths.iter().map(|p| p.to_string()).collect())].into());
        let sizes = declared(&["m/0/7", "m/1"]).unwrap();
        assert_eq!(sizes.paths_of(&hot), [vec![0, 7], vec![1]]);
        assert!(sizes.serves(&hot, &[]) && sizes.serves(&hot, &[0, 7]) && !sizes.serves(&hot, &[0, 8]));
        for bad in [&["m/0'"][..], &["m"], &["m/1", "m/1"], &["0/1"]] {
            assert!(declared(bad).is_err(), "{bad:?}");
        }
    }
}
