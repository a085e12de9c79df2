//! How many unused presignatures (ECDSA) or nonce pairs (EdDSA) a pool
//! keeps: signers bound what they make by it, hosts' keepers aim for it.
//! `presign_pool` in `enclave.toml` and `host.toml` is the default, and a
//! `[presign_pools]` table sets it per wallet.

use crate::WalletId;
use std::collections::BTreeMap;

/// The largest pool: each unused presignature is about 1.4 KB sealed per
/// signer, and a host can make a signer fill its pools up to this.
pub const MAX_POOL: u32 = 1024;

/// Pool sizes: a default and per-wallet overrides (0: no pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSizes {
    default: u32,
    wallets: BTreeMap<WalletId, u32>,
}

/// A pool size out of range.
#[derive(Debug, thiserror::Error)]
#[error("{what} is {size}, must be 0 to {MAX_POOL}")]
pub struct PoolSizeError {
    /// Which setting.
    pub what: String,
    /// Its value.
    pub size: u32,
}

impl PoolSizes {
    /// Checks every size.
    pub fn new(default: u32, wallets: BTreeMap<WalletId, u32>) -> Result<PoolSizes, PoolSizeError> {
        if default > MAX_POOL {
            return Err(PoolSizeError { what: "presign_pool".into(), size: default });
        }
        if let Some((wallet, &size)) = wallets.iter().find(|(_, &size)| size > MAX_POOL) {
            return Err(PoolSizeError { what: format!("presign_pools.{wallet}"), size });
        }
        Ok(PoolSizes { default, wallets })
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
        assert_eq!(PoolSizes::new(4, [(hot, MAX_POOL + 1)].into()).unwrap_err().what, "presign_pools.hot");
    }
}
