//! Unsigned Ethereum EIP-1559 transactions, as a sign request's payload.
//!
//! The signer decodes the transaction to hold it to approval policy (chain,
//! destination, value), then hashes the very bytes it was given; the client
//! decodes the same bytes to show an approver what they approve. Both are
//! only safe if the bytes have exactly one meaning, so the decoder accepts
//! canonical RLP only: for every accepted input,
//! `encode_unsigned(&decode_unsigned(b)?) == b`.
//!
//! The bytes come from outside, so decoding is bounded by
//! [`MAX_TX_BYTES`], checks every claimed length against the bytes actually
//! present before slicing, and sizes every allocation by the bytes present,
//! never by a claimed length: the decoded transaction takes at most about
//! twice the input (a key-less access-list entry is 23 bytes on the wire,
//! 48 in memory). Hashing (keccak256) happens in the signer: this crate
//! holds no cryptography.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest transaction accepted. It travels as a request's message, so the
/// same limit holds, and a transaction that fits is never refused later.
pub const MAX_TX_BYTES: usize = crate::request::MAX_MESSAGE_BYTES;

/// The EIP-2718 type byte of an EIP-1559 transaction. It is part of the
/// hashed bytes, so another transaction type can never be mistaken for one.
pub const TX_TYPE: u8 = 0x02;

/// A 20-byte Ethereum account address.
///
/// Parsing accepts either case but does not check the EIP-55 mixed-case
/// checksum: that needs keccak256, which lives outside this crate.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 20]);

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Ethereum address {value:?}: expected 0x and 40 hex digits")]
pub struct AddressError {
    value: String,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, AddressError> {
        let mut out = [0; 20];
        match s.strip_prefix("0x") {
            Some(digits) if digits.len() == 40 && hex::decode_to_slice(digits, &mut out).is_ok() => Ok(Address(out)),
            _ => Err(AddressError { value: s.chars().take(80).collect() }),
        }
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// An unsigned EIP-1559 transaction. Integer widths follow what Ethereum
/// clients accept (chain id, nonce and gas in 64 bits); the fees and the
/// value are 256-bit on chain, but no real amount needs more than 128 bits,
/// and a larger one is refused rather than truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eip1559Tx {
    /// EIP-155 chain id; it binds the signature to one chain.
    pub chain_id: u64,
    /// The sender's transaction count; it makes the signature single-use.
    pub nonce: u64,
    /// Tip to the block producer, in wei per gas.
    pub max_priority_fee_per_gas: u128,
    /// Ceiling on base fee plus tip, in wei per gas.
    pub max_fee_per_gas: u128,
    /// Ceiling on gas used: with the fee, it bounds what the sender can pay.
    pub gas_limit: u64,
    /// Recipient; `None` creates a contract (an empty string on the wire).
    pub to: Option<Address>,
    /// Wei transferred.
    pub value: u128,
    /// Call data, or the init code of a contract creation.
    pub data: Vec<u8>,
    /// EIP-2930 slots the transaction pre-declares (cheaper to touch).
    pub access_list: Vec<AccessListItem>,
}

/// One entry of an EIP-2930 access list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessListItem {
    /// The account whose storage is declared.
    pub address: Address,
    /// Its storage slots.
    pub storage_keys: Vec<[u8; 32]>,
}

/// Why bytes are not an unsigned EIP-1559 transaction. Fields are named as
/// in [`Eip1559Tx`], so an operator can tell which part was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EthTxError {
    /// Longer than [`MAX_TX_BYTES`].
    #[error("transaction of {len} bytes exceeds the limit of {MAX_TX_BYTES} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Another EIP-2718 transaction type, or a legacy transaction.
    #[error("transaction type byte {type_byte:#04x} is not EIP-1559 (0x02)")]
    NotEip1559 {
        /// The first byte.
        type_byte: u8,
    },
    /// An item claims more bytes than its enclosing list or the input holds.
    #[error("{field} runs past the end of the data that holds it")]
    Truncated {
        /// The item.
        field: &'static str,
    },
    /// An integer starts with a zero byte (zero is the empty string).
    #[error("{field} has a leading zero byte")]
    LeadingZero {
        /// The integer.
        field: &'static str,
    },
    /// A length prefix is longer than needed: the long form for 55 bytes or
    /// fewer, or a length with a leading zero byte.
    #[error("{field} has a non-minimal length prefix")]
    NonMinimalLength {
        /// The item.
        field: &'static str,
    },
    /// A single byte below 0x80 wrapped as a string; it must stand alone.
    #[error("{field} is a single byte below 0x80 encoded as a string")]
    SingleByteString {
        /// The item.
        field: &'static str,
    },
    /// Bytes after the last item that do not form another item.
    #[error("trailing bytes after {after}")]
    TrailingBytes {
        /// The last item read.
        after: &'static str,
    },
    /// A list with the wrong number of items; a signed transaction (12)
    /// lands here.
    #[error("{list} has {got} items, expected {expected}")]
    FieldCount {
        /// The list.
        list: &'static str,
        /// How many it should have.
        expected: usize,
        /// How many it has.
        got: usize,
    },
    /// An integer too large for its field.
    #[error("{field} is too large")]
    IntegerTooLarge {
        /// The integer.
        field: &'static str,
    },
    /// A fixed-size string (address, storage key) of another size.
    #[error("{field} is {len} bytes")]
    BadLength {
        /// The string.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// A string where a list belongs.
    #[error("{field} must be a list")]
    ExpectedList {
        /// The item.
        field: &'static str,
    },
    /// A list where a string belongs.
    #[error("{field} must be a string")]
    ExpectedString {
        /// The item.
        field: &'static str,
    },
}

impl EthTxError {
    /// The wire error code, as for any other undecodable request.
    pub fn code(&self) -> crate::ErrorCode {
        match self {
            EthTxError::TooLarge { .. } => crate::ErrorCode::TooLarge,
            _ => crate::ErrorCode::Malformed,
        }
    }
}

/// Decodes `0x02 || rlp([chain_id, nonce, max_priority_fee_per_gas,
/// max_fee_per_gas, gas_limit, to, value, data, access_list])`, the bytes an
/// Ethereum signer hashes. Anything but the canonical encoding is refused.
pub fn decode_unsigned(bytes: &[u8]) -> Result<Eip1559Tx, EthTxError> {
    if bytes.len() > MAX_TX_BYTES {
        return Err(EthTxError::TooLarge { len: bytes.len() });
    }
    let (&type_byte, rlp) = bytes.split_first().ok_or(EthTxError::Truncated { field: "transaction" })?;
    if type_byte != TX_TYPE {
        return Err(EthTxError::NotEip1559 { type_byte });
    }
    let (tx, rest) = split(rlp, "transaction")?;
    if !rest.is_empty() {
        return Err(EthTxError::TrailingBytes { after: "transaction" });
    }
    let [chain_id, nonce, tip, max_fee, gas_limit, to, value, data, access_list] = fields(
        list(tx, "transaction")?,
        "transaction",
        ["chain_id", "nonce", "max_priority_fee_per_gas", "max_fee_per_gas", "gas_limit", "to", "value", "data", "access_list"],
    )?;
    Ok(Eip1559Tx {
        chain_id: uint64(chain_id, "chain_id")?,
        nonce: uint64(nonce, "nonce")?,
        max_priority_fee_per_gas: uint(tip, "max_priority_fee_per_gas")?,
        max_fee_per_gas: uint(max_fee, "max_fee_per_gas")?,
        gas_limit: uint64(gas_limit, "gas_limit")?,
        to: match string(to, "to")? {
            [] => None,
            _ => Some(Address(fixed(to, "to")?)),
        },
        value: uint(value, "value")?,
        data: string(data, "data")?.to_vec(),
        access_list: decode_access_list(access_list)?,
    })
}

/// Encodes `tx` canonically, as [`decode_unsigned`] expects it. A
/// transaction with more than [`MAX_TX_BYTES`] of data encodes, but is
/// refused by the decoder.
pub fn encode_unsigned(tx: &Eip1559Tx) -> Vec<u8> {
    let mut access_list = Vec::new();
    for item in &tx.access_list {
        let mut keys = Vec::with_capacity(33 * item.storage_keys.len());
        for key in &item.storage_keys {
            put_string(&mut keys, key);
        }
        let mut entry = Vec::with_capacity(24 + keys.len());
        put_string(&mut entry, &item.address.0);
        put_header(&mut entry, LIST, keys.len());
        entry.extend_from_slice(&keys);
        put_header(&mut access_list, LIST, entry.len());
        access_list.extend_from_slice(&entry);
    }
    let mut body = Vec::with_capacity(128 + tx.data.len() + access_list.len());
    put_uint(&mut body, tx.chain_id.into());
    put_uint(&mut body, tx.nonce.into());
    put_uint(&mut body, tx.max_priority_fee_per_gas);
    put_uint(&mut body, tx.max_fee_per_gas);
    put_uint(&mut body, tx.gas_limit.into());
    put_string(&mut body, tx.to.as_ref().map_or(&[], |a| &a.0));
    put_uint(&mut body, tx.value);
    put_string(&mut body, &tx.data);
    put_header(&mut body, LIST, access_list.len());
    body.extend_from_slice(&access_list);
    let mut out = Vec::with_capacity(10 + body.len());
    out.push(TX_TYPE);
    put_header(&mut out, LIST, body.len());
    out.extend_from_slice(&body);
    out
}

/// Prefix base of an RLP string.
const STRING: u8 = 0x80;
/// Prefix base of an RLP list.
const LIST: u8 = 0xc0;
/// Longest payload whose length fits in the prefix byte itself.
const SHORT_MAX: usize = 55;

/// One RLP item, borrowed from the input: a string, or a list's payload.
#[derive(Clone, Copy)]
enum Item<'a> {
    String(&'a [u8]),
    List(&'a [u8]),
}

/// Splits the first item off `input`, refusing every non-canonical form, and
/// returns it with the bytes that follow.
fn split<'a>(input: &'a [u8], field: &'static str) -> Result<(Item<'a>, &'a [u8]), EthTxError> {
    let (&prefix, rest) = input.split_first().ok_or(EthTxError::Truncated { field })?;
    let (base, len, rest) = match prefix {
        ..STRING => return Ok((Item::String(&input[..1]), rest)),
        STRING..=0xb7 => (STRING, usize::from(prefix - STRING), rest),
        0xb8..LIST => long_length(STRING, prefix - 0xb7, rest, field)?,
        LIST..=0xf7 => (LIST, usize::from(prefix - LIST), rest),
        0xf8.. => long_length(LIST, prefix - 0xf7, rest, field)?,
    };
    if len > rest.len() {
        return Err(EthTxError::Truncated { field });
    }
    let (payload, rest) = rest.split_at(len);
    if base == LIST {
        return Ok((Item::List(payload), rest));
    }
    match payload {
        [byte] if *byte < STRING => Err(EthTxError::SingleByteString { field }),
        _ => Ok((Item::String(payload), rest)),
    }
}

/// Reads a long-form length of `len_of_len` bytes.
fn long_length<'a>(base: u8, len_of_len: u8, input: &'a [u8], field: &'static str) -> Result<(u8, usize, &'a [u8]), EthTxError> {
    let n = usize::from(len_of_len);
    if n > input.len() {
        return Err(EthTxError::Truncated { field });
    }
    let (be, rest) = input.split_at(n);
    if be.first() == Some(&0) {
        return Err(EthTxError::NonMinimalLength { field });
    }
    // A length that overflows usize is longer than any input.
    let len = be.iter().try_fold(0usize, |acc, b| acc.checked_mul(256)?.checked_add(usize::from(*b))).ok_or(EthTxError::Truncated { field })?;
    if len <= SHORT_MAX {
        return Err(EthTxError::NonMinimalLength { field });
    }
    Ok((base, len, rest))
}

/// Splits a list's payload into exactly `N` items, named for errors.
fn fields<'a, const N: usize>(payload: &'a [u8], list: &'static str, names: [&'static str; N]) -> Result<[Item<'a>; N], EthTxError> {
    let mut items = [Item::String(&[]); N];
    let mut rest = payload;
    for (got, (slot, field)) in items.iter_mut().zip(names).enumerate() {
        if rest.is_empty() {
            return Err(EthTxError::FieldCount { list, expected: N, got });
        }
        (*slot, rest) = split(rest, field)?;
    }
    if rest.is_empty() {
        return Ok(items);
    }
    // Whole extra items mean another shape (a signed transaction has 12);
    // anything else is junk after the last field.
    let after = names.last().copied().unwrap_or(list);
    let extra = count(rest).ok_or(EthTxError::TrailingBytes { after })?;
    Err(EthTxError::FieldCount { list, expected: N, got: N + extra })
}

/// How many items `payload` holds, if it is a sequence of whole items.
fn count(mut payload: &[u8]) -> Option<usize> {
    let mut n = 0;
    while !payload.is_empty() {
        payload = split(payload, "").ok()?.1;
        n += 1;
    }
    Some(n)
}

/// Each item of a list's payload, named `field` for errors.
fn items<'a>(mut payload: &'a [u8], field: &'static str) -> impl Iterator<Item = Result<Item<'a>, EthTxError>> {
    std::iter::from_fn(move || {
        if payload.is_empty() {
            return None;
        }
        let (item, rest) = match split(payload, field) {
            Ok(split) => split,
            Err(e) => {
                payload = &[];
                return Some(Err(e));
            }
        };
        payload = rest;
        Some(Ok(item))
    })
}

fn string<'a>(item: Item<'a>, field: &'static str) -> Result<&'a [u8], EthTxError> {
    match item {
        Item::String(bytes) => Ok(bytes),
        Item::List(_) => Err(EthTxError::ExpectedString { field }),
    }
}

fn list<'a>(item: Item<'a>, field: &'static str) -> Result<&'a [u8], EthTxError> {
    match item {
        Item::List(payload) => Ok(payload),
        Item::String(_) => Err(EthTxError::ExpectedList { field }),
    }
}

fn fixed<const N: usize>(item: Item<'_>, field: &'static str) -> Result<[u8; N], EthTxError> {
    let bytes = string(item, field)?;
    bytes.try_into().map_err(|_| EthTxError::BadLength { field, len: bytes.len() })
}

/// A big-endian integer without leading zeros, up to 128 bits.
fn uint(item: Item<'_>, field: &'static str) -> Result<u128, EthTxError> {
    let bytes = string(item, field)?;
    if bytes.first() == Some(&0) {
        return Err(EthTxError::LeadingZero { field });
    }
    if bytes.len() > 16 {
        return Err(EthTxError::IntegerTooLarge { field });
    }
    Ok(bytes.iter().fold(0, |acc, b| acc << 8 | u128::from(*b)))
}

fn uint64(item: Item<'_>, field: &'static str) -> Result<u64, EthTxError> {
    u64::try_from(uint(item, field)?).map_err(|_| EthTxError::IntegerTooLarge { field })
}

/// Smallest access-list entry on the wire: list header, address, empty key
/// list. Capacities are capped by it (and by [`KEY_BYTES`] for keys), so
/// bytes that only look like many items cannot reserve memory for them.
const MIN_ENTRY_BYTES: usize = 1 + 21 + 1;
/// A storage key on the wire: header and 32 bytes.
const KEY_BYTES: usize = 33;

fn decode_access_list(item: Item<'_>) -> Result<Vec<AccessListItem>, EthTxError> {
    let payload = list(item, "access_list")?;
    let mut out = Vec::with_capacity(count(payload).unwrap_or(0).min(payload.len() / MIN_ENTRY_BYTES));
    for entry in items(payload, "access_list entry") {
        let [address, keys] = fields(list(entry?, "access_list entry")?, "access_list entry", ["address", "storage_keys"])?;
        let address = Address(fixed(address, "address")?);
        let keys = list(keys, "storage_keys")?;
        let mut storage_keys = Vec::with_capacity(keys.len() / KEY_BYTES);
        for key in items(keys, "storage key") {
            storage_keys.push(fixed(key?, "storage key")?);
        }
        out.push(AccessListItem { address, storage_keys });
    }
    Ok(out)
}

fn put_header(out: &mut Vec<u8>, base: u8, len: usize) {
    if len <= SHORT_MAX {
        out.push(base + len as u8);
    } else {
        let be = (len as u64).to_be_bytes();
        let skip = (len as u64).leading_zeros() as usize / 8;
        out.push(base + SHORT_MAX as u8 + (be.len() - skip) as u8);
        out.extend_from_slice(&be[skip..]);
    }
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    match bytes {
        [byte] if *byte < STRING => out.push(*byte),
        _ => {
            put_header(out, STRING, bytes.len());
            out.extend_from_slice(bytes);
        }
    }
}

fn put_uint(out: &mut Vec<u8>, value: u128) {
    let be = value.to_be_bytes();
    put_string(out, &be[value.leading_zeros() as usize / 8..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From ethers-rs, `ethers-core/src/types/transaction/eip2718.rs`,
    /// `test_typed_tx_decode`; its fields are published in `test_typed_tx`
    /// next to it, with the keccak256 sighash
    /// 0x090b19818d9d087a49c3d2ecee4829ee4acea46089c1381ac5e588188627466d.
    const ETHERS_WITH_ACCESS_LIST: &str = "02f86b8205390284773594008477359400830186a09496216849c49358b10257cb55b28ea603c874b05e865af3107a4000825544f838f7940000000000000000000000000000000000000001e1a00100000000000000000000000000000000000000000000000000000000000000";
    /// The fields of `test_typed_tx_without_access_list` in the same file
    /// (published there only as JSON and the sighash
    /// 0xa1ea3121940930f7e7b54506d80717f14c5163807951624c36354202a8bffda6,
    /// which these bytes hash to).
    const ETHERS_WITHOUT_ACCESS_LIST: &str = "02f28205390284773594008477359400830186a09496216849c49358b10257cb55b28ea603c874b05e865af3107a4000825544c0";
    /// From `test_eip1559_deploy_tx_decode` in the same file: a contract
    /// creation.
    const ETHERS_DEPLOY: &str = "02dc8205058193849502f90085010c388d00837a120080808411223344c0";
    /// From `test_signed_tx_decode` in the same file: a signed transaction
    /// (y_parity, r, s appended), which must not pass for an unsigned one.
    const ETHERS_SIGNED: &str = "02f899018085602b94278b85b2f7a17de88302cf5c940aa7420c43b8c1a7b165d216948870c8ecfe1ee18802c68af0bb140000a46ecd23060000000000000000000000000000000000000000000000000000000000000002c080a0c5f35bf1cc6ab13053e33b1af7400c267be17218aeadcdb4ae3eefd4795967e8a04f6871044dd6368aea8deecd1c29f55b5531020f5506502e3f79ad457051bc4a";

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn address(s: &str) -> Address {
        s.parse().unwrap()
    }

    fn transfer() -> Eip1559Tx {
        Eip1559Tx {
            chain_id: 1,
            nonce: 7,
            max_priority_fee_per_gas: 2_000_000_000,
            max_fee_per_gas: 30_000_000_000,
            gas_limit: 21_000,
            to: Some(address("0xd8da6bf26964af9d7eed9e03e53415d37aa96045")),
            value: 1_000_000_000_000_000_000,
            data: vec![],
            access_list: vec![],
        }
    }

    /// `transfer()`'s nine fields, encoded by hand, so that a test can swap
    /// one for a bad encoding.
    fn transfer_fields() -> Vec<Vec<u8>> {
        ["01", "07", "8477359400", "8506fc23ac00", "825208", "94d8da6bf26964af9d7eed9e03e53415d37aa96045", "880de0b6b3a7640000", "80", "c0"]
            .into_iter()
            .map(unhex)
            .collect()
    }

    fn tx_of(fields: &[Vec<u8>]) -> Vec<u8> {
        let body = fields.concat();
        let mut out = vec![TX_TYPE];
        put_header(&mut out, LIST, body.len());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes `transfer()` with field `i` replaced by `hex`.
    fn with_field(i: usize, hex: &str) -> Result<Eip1559Tx, EthTxError> {
        let mut fields = transfer_fields();
        fields[i] = unhex(hex);
        decode_unsigned(&tx_of(&fields))
    }

    fn round_trip(tx: &Eip1559Tx) -> Vec<u8> {
        let bytes = encode_unsigned(tx);
        assert_eq!(&decode_unsigned(&bytes).unwrap(), tx);
        bytes
    }

    #[test]
    fn transfer_round_trips_and_matches_a_hand_encoding() {
        assert_eq!(round_trip(&transfer()), tx_of(&transfer_fields()));
    }

    #[test]
    fn contract_creation_round_trips() {
        let tx = Eip1559Tx { to: None, value: 0, nonce: 0, data: vec![0x60, 0x80, 0x60, 0x40, 0x52], ..transfer() };
        let bytes = round_trip(&tx);
        // `to` is the empty string, right after gas_limit.
        assert!(bytes.windows(4).any(|w| w == [0x82, 0x52, 0x08, 0x80]), "{}", hex::encode(&bytes));
    }

    #[test]
    fn access_list_and_data_round_trip() {
        let tx = Eip1559Tx {
            data: vec![0xab; 300],
            access_list: vec![
                AccessListItem { address: Address([0x11; 20]), storage_keys: vec![[0; 32], [0xff; 32]] },
                AccessListItem { address: Address([0x22; 20]), storage_keys: vec![] },
                AccessListItem { address: Address([0x33; 20]), storage_keys: vec![[7; 32]; 3] },
            ],
            ..transfer()
        };
        round_trip(&tx);
        // Limits of every integer, and one-byte data at the canonical edge.
        for data in [vec![0], vec![0x7f], vec![0x80]] {
            round_trip(&Eip1559Tx { data, ..transfer() });
        }
        let max = Eip1559Tx {
            chain_id: u64::MAX,
            nonce: u64::MAX,
            max_priority_fee_per_gas: u128::MAX,
            max_fee_per_gas: u128::MAX,
            gas_limit: u64::MAX,
            value: u128::MAX,
            ..transfer()
        };
        round_trip(&max);
        round_trip(&Eip1559Tx { chain_id: 0, nonce: 0, max_priority_fee_per_gas: 0, max_fee_per_gas: 0, gas_limit: 0, value: 0, ..transfer() });
    }

    #[test]
    fn ethers_rs_vectors() {
        let bytes = unhex(ETHERS_WITH_ACCESS_LIST);
        let tx = decode_unsigned(&bytes).unwrap();
        let expected = Eip1559Tx {
            chain_id: 0x539,
            nonce: 2,
            max_priority_fee_per_gas: 0x77359400,
            max_fee_per_gas: 0x77359400,
            gas_limit: 0x186a0,
            to: Some(address("0x96216849c49358B10257cb55b28eA603c874b05E")),
            value: 0x5af3107a4000,
            data: vec![0x55, 0x44],
            access_list: vec![AccessListItem {
                address: address("0x0000000000000000000000000000000000000001"),
                storage_keys: vec![{
                    let mut key = [0; 32];
                    key[0] = 1;
                    key
                }],
            }],
        };
        assert_eq!(tx, expected);
        assert_eq!(encode_unsigned(&tx), bytes);

        let without = Eip1559Tx { access_list: vec![], ..expected };
        assert_eq!(encode_unsigned(&without), unhex(ETHERS_WITHOUT_ACCESS_LIST));
        assert_eq!(decode_unsigned(&unhex(ETHERS_WITHOUT_ACCESS_LIST)).unwrap(), without);

        let deploy = unhex(ETHERS_DEPLOY);
        let tx = decode_unsigned(&deploy).unwrap();
        let expected = Eip1559Tx {
            chain_id: 0x505,
            nonce: 0x93,
            max_priority_fee_per_gas: 0x9502f900,
            max_fee_per_gas: 0x010c388d00,
            gas_limit: 0x7a1200,
            to: None,
            value: 0,
            data: vec![0x11, 0x22, 0x33, 0x44],
            access_list: vec![],
        };
        assert_eq!(tx, expected);
        assert_eq!(encode_unsigned(&tx), deploy);
    }

    #[test]
    fn refuses_non_canonical_integers() {
        assert_eq!(with_field(1, "820007"), Err(EthTxError::LeadingZero { field: "nonce" }));
        assert_eq!(with_field(0, "00"), Err(EthTxError::LeadingZero { field: "chain_id" }));
        assert_eq!(with_field(6, "8900ffffffffffffffff"), Err(EthTxError::LeadingZero { field: "value" }));
        assert_eq!(with_field(0, "8101"), Err(EthTxError::SingleByteString { field: "chain_id" }));
        assert_eq!(with_field(7, "817f"), Err(EthTxError::SingleByteString { field: "data" }));
    }

    #[test]
    fn refuses_non_minimal_lengths() {
        assert_eq!(with_field(7, "b803aabbcc"), Err(EthTxError::NonMinimalLength { field: "data" }));
        assert_eq!(with_field(7, &format!("b90038{}", "ab".repeat(56))), Err(EthTxError::NonMinimalLength { field: "data" }));
        assert_eq!(with_field(8, "f800"), Err(EthTxError::NonMinimalLength { field: "access_list" }));
        // The whole transaction (48 bytes of fields) in the long form.
        let body = transfer_fields().concat();
        let mut bytes = vec![TX_TYPE, 0xf8, body.len() as u8];
        bytes.extend_from_slice(&body);
        assert_eq!(decode_unsigned(&bytes), Err(EthTxError::NonMinimalLength { field: "transaction" }));
    }

    #[test]
    fn refuses_trailing_bytes_and_wrong_shapes() {
        let mut bytes = encode_unsigned(&transfer());
        bytes.push(0);
        assert_eq!(decode_unsigned(&bytes), Err(EthTxError::TrailingBytes { after: "transaction" }));

        let mut fields = transfer_fields();
        fields.push(vec![0x81]);
        assert_eq!(decode_unsigned(&tx_of(&fields)), Err(EthTxError::TrailingBytes { after: "access_list" }));
        fields.pop();
        fields.push(vec![0x80]);
        assert_eq!(decode_unsigned(&tx_of(&fields)), Err(EthTxError::FieldCount { list: "transaction", expected: 9, got: 10 }));
        fields.truncate(8);
        assert_eq!(decode_unsigned(&tx_of(&fields)), Err(EthTxError::FieldCount { list: "transaction", expected: 9, got: 8 }));
        assert_eq!(decode_unsigned(&unhex(ETHERS_SIGNED)), Err(EthTxError::FieldCount { list: "transaction", expected: 9, got: 12 }));

        let address = format!("94{}", "11".repeat(20));
        let list = |items: &str| {
            let mut header = Vec::new();
            put_header(&mut header, LIST, items.len() / 2);
            format!("{}{items}", hex::encode(header))
        };
        let access_list = |items: &str| list(&list(items));
        assert_eq!(with_field(8, &access_list(&format!("{address}c080"))), Err(EthTxError::FieldCount { list: "access_list entry", expected: 2, got: 3 }));
        assert_eq!(with_field(8, &access_list(&format!("{address}c081"))), Err(EthTxError::TrailingBytes { after: "storage_keys" }));
        assert_eq!(with_field(8, "d5").map(|_| ()), Err(EthTxError::Truncated { field: "access_list" }));
        assert_eq!(with_field(8, "80"), Err(EthTxError::ExpectedList { field: "access_list" }));
        assert_eq!(with_field(8, "c180"), Err(EthTxError::ExpectedList { field: "access_list entry" }));
        assert_eq!(with_field(7, "c0"), Err(EthTxError::ExpectedString { field: "data" }));
        assert_eq!(with_field(5, "c0"), Err(EthTxError::ExpectedString { field: "to" }));
        assert_eq!(with_field(8, "c2c180"), Err(EthTxError::FieldCount { list: "access_list entry", expected: 2, got: 1 }));
        assert_eq!(with_field(8, &access_list(&format!("{address}e0a0{}", "00".repeat(31)))), Err(EthTxError::Truncated { field: "storage key" }));
        assert_eq!(with_field(8, &access_list(&format!("{address}e09f{}", "00".repeat(31)))), Err(EthTxError::BadLength { field: "storage key", len: 31 }));
        assert_eq!(with_field(8, &access_list(&format!("93{}c0", "11".repeat(19)))), Err(EthTxError::BadLength { field: "address", len: 19 }));
    }

    #[test]
    fn refuses_wrong_types_and_sizes() {
        let mut bytes = encode_unsigned(&transfer());
        bytes[0] = 0x01;
        assert_eq!(decode_unsigned(&bytes), Err(EthTxError::NotEip1559 { type_byte: 0x01 }));
        // A legacy transaction is a bare RLP list.
        assert_eq!(decode_unsigned(&bytes[1..]), Err(EthTxError::NotEip1559 { type_byte: bytes[1] }));

        assert_eq!(with_field(5, &format!("93{}", "11".repeat(19))), Err(EthTxError::BadLength { field: "to", len: 19 }));
        assert_eq!(with_field(5, &format!("95{}", "11".repeat(21))), Err(EthTxError::BadLength { field: "to", len: 21 }));
        assert_eq!(with_field(6, &format!("9101{}", "00".repeat(16))), Err(EthTxError::IntegerTooLarge { field: "value" }));
        assert_eq!(with_field(3, &format!("9101{}", "00".repeat(16))), Err(EthTxError::IntegerTooLarge { field: "max_fee_per_gas" }));
        assert_eq!(with_field(0, "89010000000000000000"), Err(EthTxError::IntegerTooLarge { field: "chain_id" }));
        assert_eq!(with_field(4, "89010000000000000000"), Err(EthTxError::IntegerTooLarge { field: "gas_limit" }));
    }

    #[test]
    fn refuses_truncated_input() {
        assert_eq!(decode_unsigned(&[]), Err(EthTxError::Truncated { field: "transaction" }));
        assert_eq!(decode_unsigned(&[TX_TYPE]), Err(EthTxError::Truncated { field: "transaction" }));
        let bytes = unhex(ETHERS_WITH_ACCESS_LIST);
        assert_eq!(decode_unsigned(&bytes[..bytes.len() - 1]), Err(EthTxError::Truncated { field: "transaction" }));
        for len in 0..bytes.len() {
            assert!(decode_unsigned(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
        // A claimed length far beyond the input is refused before anything
        // is allocated.
        assert_eq!(decode_unsigned(&unhex("02ffffffffffffffffff")), Err(EthTxError::Truncated { field: "transaction" }));
        assert_eq!(decode_unsigned(&unhex("02fbffffffff00")), Err(EthTxError::Truncated { field: "transaction" }));
    }

    #[test]
    fn size_limit() {
        let sized = |n| encode_unsigned(&Eip1559Tx { data: vec![0xab; n], ..transfer() });
        // Above 255 bytes the headers no longer change size with the data.
        let n = 1000 + MAX_TX_BYTES - sized(1000).len();
        let largest = sized(n);
        assert_eq!(largest.len(), MAX_TX_BYTES);
        assert!(decode_unsigned(&largest).is_ok());
        let err = decode_unsigned(&sized(n + 1)).unwrap_err();
        assert_eq!(err, EthTxError::TooLarge { len: MAX_TX_BYTES + 1 });
        assert_eq!(err.code(), crate::ErrorCode::TooLarge);
        assert_eq!(EthTxError::Truncated { field: "to" }.code(), crate::ErrorCode::Malformed);
    }

    #[test]
    fn addresses() {
        let a = address("0x96216849c49358B10257cb55b28eA603c874b05E");
        assert_eq!(a.to_string(), "0x96216849c49358b10257cb55b28ea603c874b05e");
        assert_eq!(format!("{a:?}"), "0x96216849c49358b10257cb55b28ea603c874b05e");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"0x96216849c49358b10257cb55b28ea603c874b05e\"");
        assert_eq!(serde_json::from_str::<Address>(&json).unwrap(), a);
        for bad in [
            "",
            "0x",
            "96216849c49358b10257cb55b28ea603c874b05e",
            "0X96216849c49358b10257cb55b28ea603c874b05e",
            "0x96216849c49358b10257cb55b28ea603c874b05",
            "0x96216849c49358b10257cb55b28ea603c874b05e0",
            "0x96216849c49358b10257cb55b28ea603c874b05g",
            "0x96216849c49358b10257cb55b28ea603c874b0é",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
            assert!(serde_json::from_str::<Address>(&format!("{bad:?}")).is_err(), "{bad}");
        }
    }

    /// Decoding never panics, and whatever it accepts re-encodes to the
    /// same bytes: random bytes, and random edits of valid transactions
    /// (which is how most accepted inputs arise).
    #[test]
    fn random_inputs_never_panic_and_accepted_ones_round_trip() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        let seeds: Vec<Vec<u8>> = [ETHERS_WITH_ACCESS_LIST, ETHERS_WITHOUT_ACCESS_LIST, ETHERS_DEPLOY, ETHERS_SIGNED].into_iter().map(unhex).collect();
        let mut accepted = 0;
        for round in 0..600 {
            let bytes = if round % 3 == 0 {
                let mut bytes: Vec<u8> = (0..next() % 120).map(|_| next() as u8).collect();
                if let Some(first) = bytes.first_mut() {
                    *first = TX_TYPE;
                }
                bytes
            } else {
                let mut bytes = seeds[next() % seeds.len()].clone();
                for _ in 0..1 + next() % 3 {
                    let at = next() % bytes.len();
                    match next() % 4 {
                        0 => bytes.truncate(at.max(1)),
                        1 => bytes.insert(at, next() as u8),
                        2 => drop(bytes.remove(at)),
                        _ => bytes[at] = next() as u8,
                    }
                    if bytes.is_empty() {
                        bytes.push(TX_TYPE);
                    }
                }
                bytes
            };
            if let Ok(tx) = decode_unsigned(&bytes) {
                assert_eq!(encode_unsigned(&tx), bytes, "{}", hex::encode(&bytes));
                accepted += 1;
            }
        }
        assert!(accepted > 20, "only {accepted} inputs decoded: the round trip was barely tested");
    }
}
