//! The PKCS#11 token of `hsm` mode: the node's root of trust.
//!
//! Two keys live in the token and never leave it: an AES-256 key that seals
//! every blob (CKM_AES_GCM) and the node's Ed25519 identity key (CKM_EDDSA).
//! Both are generated inside the token as sensitive and non-extractable. The
//! token is found by its label, never by slot number (SoftHSM2 gives slots
//! random ids), and the PIN comes from a file or an environment variable,
//! never from the command line, and is never logged.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use zeroize::Zeroizing;

/// DER of the Ed25519 curve OID 1.3.101.112 (RFC 8410), as CKA_EC_PARAMS.
const ED25519_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
/// AES-GCM tag length.
const TAG_BITS: u64 = 128;
/// Sessions a token is opened with at most (one per core below that).
const MAX_SESSIONS: usize = 8;
/// Copies of each version floor (see [`Token::set_floor`]).
const FLOOR_COPIES: usize = 2;
/// A PIN longer than this is not a PIN but a misconfigured file.
const MAX_PIN_BYTES: usize = 256;

/// Where the user PIN comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file holding the PIN (trailing newline ignored); mode 0600 advised.
    File(PathBuf),
    /// An environment variable of the signer process.
    Env(String),
}

/// How to reach the token and which keys to use.
#[derive(Debug, Clone)]
pub struct HsmConfig {
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The user PIN's source.
    pub pin: PinSource,
    /// Label of the AES key that seals new blobs. Blobs sealed under other
    /// keys of the token still open: that is how a key is rotated.
    pub seal_key_label: String,
    /// Label of the Ed25519 identity key pair.
    pub identity_key_label: String,
}

/// Why the token cannot be used. Every variant names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The module is missing or is not a PKCS#11 library.
    #[error("cannot load the PKCS#11 module {path}: {source}")]
    Module {
        /// The configured module.
        path: PathBuf,
        /// What the loader said.
        #[source]
        source: CkError,
    },
    /// No initialised token carries the configured label.
    #[error("no initialised token labelled {label:?} (tokens found: {found:?})")]
    NoToken {
        /// The configured label.
        label: String,
        /// The labels that do exist.
        found: Vec<String>,
    },
    /// The PIN file cannot be read.
    #[error("cannot read the PIN file {path}: {source}")]
    PinFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The PIN environment variable is not set.
    #[error("the PIN environment variable {0} is not set")]
    PinEnv(String),
    /// The PIN source holds nothing usable.
    #[error("the PIN from {0} is empty or longer than 256 bytes")]
    PinShape(String),
    /// A version floor object holds something else.
    #[error("the token's version floor {label:?} does not hold a version")]
    BadFloor {
        /// Its label.
        label: String,
    },
    /// The token refused the PIN.
    #[error("the token {label:?} refused the PIN")]
    PinIncorrect {
        /// The token.
        label: String,
    },
    /// The token has locked its user PIN.
    #[error("the token {label:?} has locked its user PIN")]
    PinLocked {
        /// The token.
        label: String,
    },
    /// A key the configuration names is not in the token.
    #[error("the token has no {kind} labelled {label:?}; run `conclave-enclave init` to create it")]
    MissingKey {
        /// What kind of key.
        kind: &'static str,
        /// Its label.
        label: String,
    },
    /// More than one object carries a key label: which one to use is unclear.
    #[error("the token has {count} objects of kind {kind} labelled {label:?}; labels must be unique")]
    AmbiguousKey {
        /// What kind of key.
        kind: &'static str,
        /// Its label.
        label: String,
        /// How many.
        count: usize,
    },
    /// The token's public key is not an Ed25519 point.
    #[error("the identity public key {label:?} is not an Ed25519 point")]
    BadPublicKey {
        /// Its label.
        label: String,
    },
    /// Any other PKCS#11 failure.
    #[error("PKCS#11 {op}: {source}")]
    Pkcs11 {
        /// The operation.
        op: &'static str,
        /// What the token said.
        #[source]
        source: CkError,
    },
}

/// Decryption under a token key failed.
#[derive(Debug)]
pub enum DecryptFailure {
    /// The ciphertext, tag or additional data do not authenticate.
    Authentication,
    /// The token failed.
    Token(HsmError),
}

fn pkcs11(op: &'static str) -> impl FnOnce(CkError) -> HsmError {
    move |source| HsmError::Pkcs11 { op, source }
}

impl PinSource {
    fn read(&self) -> Result<AuthPin, HsmError> {
        let (text, origin) = match self {
            PinSource::File(path) => {
                let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| HsmError::PinFile { path: path.clone(), source })?);
                let text = String::from_utf8(bytes.to_vec()).map_err(|e| {
                    let mut bytes = e.into_bytes();
                    zeroize::Zeroize::zeroize(&mut bytes);
                    HsmError::PinShape(path.display().to_string())
                })?;
                (Zeroizing::new(text), path.display().to_string())
            }
            PinSource::Env(var) => {
                let text = std::env::var(var).map_err(|_| HsmError::PinEnv(var.clone()))?;
                (Zeroizing::new(text), format!("${var}"))
            }
        };
        let pin = text.trim_end_matches(['\n', '\r']);
        if pin.is_empty() || pin.len() > MAX_PIN_BYTES {
            return Err(HsmError::PinShape(origin));
        }
        Ok(AuthPin::from(pin))
    }
}

/// The objects of one version floor in the token, as last found or written
/// by this process (its one writer), so that raising it needs no search.
pub struct FloorObjects {
    /// Its copies (at most [`FLOOR_COPIES`]) and the version each holds.
    copies: Vec<(ObjectHandle, u32)>,
    /// Objects of the earlier layout and the version each holds.
    legacy: Vec<(ObjectHandle, u32)>,
}

impl FloorObjects {
    /// The floor: the highest version any of its objects holds.
    pub fn value(&self) -> u32 {
        self.copies.iter().chain(&self.legacy).map(|(_, v)| *v).max().unwrap_or(0)
    }
}

/// Logged-in sessions with the token, one per core: a PKCS#11 session is
/// not safe to share between threads, so each call takes a free one, and
/// concurrent sessions of the signer (an Ed25519 signature here is half a
/// millisecond of SoftHSM2's CPU) do not queue behind a single one.
pub struct Token {
    // Declared before the context so that they close before C_Finalize.
    sessions: Vec<Mutex<Session>>,
    /// Where the next call starts looking for a free session.
    next: AtomicUsize,
    _context: Pkcs11,
}

impl Token {
    /// Loads the module, finds the token by label and logs in as user.
    pub fn open(config: &HsmConfig) -> Result<Token, HsmError> {
        let context = Pkcs11::new(&config.module).map_err(|source| HsmError::Module { path: config.module.clone(), source })?;
        match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            // Another token of the same module in this process (tests do that).
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(pkcs11("C_Initialize")(e)),
        }
        let mut found = Vec::new();
        let mut slot = None;
        for s in context.get_slots_with_initialized_token().map_err(pkcs11("C_GetSlotList"))? {
            let info = context.get_token_info(s).map_err(pkcs11("C_GetTokenInfo"))?;
            let label = info.label().trim_end().to_string();
            if label == config.token_label {
                slot = Some(s);
                break;
            }
            found.push(label);
        }
        let slot = slot.ok_or_else(|| HsmError::NoToken { label: config.token_label.clone(), found })?;
        let pin = config.pin.read()?;
        let session = context.open_rw_session(slot).map_err(pkcs11("C_OpenSession"))?;
        let label = config.token_label.clone();
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange, _)) => return Err(HsmError::PinIncorrect { label }),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => return Err(HsmError::PinLocked { label }),
            Err(e) => return Err(pkcs11("C_Login")(e)),
        }
        // Logging in once logs in every session of this process with the token.
        let mut sessions = vec![Mutex::new(session)];
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_SESSIONS);
        for _ in 1..cores {
            sessions.push(Mutex::new(context.open_rw_session(slot).map_err(pkcs11("C_OpenSession"))?));
        }
        Ok(Token { sessions, next: AtomicUsize::new(0), _context: context })
    }

    /// A free session, or if none is free, the next in turn once it is.
    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        // A panic while holding a lock leaves its session usable: PKCS#11
        // operations are single calls, none is left half-done.
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.sessions.len();
        for i in 0..n {
            match self.sessions[(start + i) % n].try_lock() {
                Ok(session) => return session,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        self.sessions[start % n].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn find_one(&self, kind: &'static str, template: &[Attribute]) -> Result<Option<ObjectHandle>, HsmError> {
        let label = template
            .iter()
            .find_map(|a| match a {
                Attribute::Label(l) => Some(String::from_utf8_lossy(l).into_owned()),
                _ => None,
            })
            .unwrap_or_default();
        let found = self.session().find_objects(template).map_err(pkcs11("C_FindObjects"))?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => Err(HsmError::AmbiguousKey { kind, label, count: many.len() }),
        }
    }

    /// The AES seal key labelled `label`, if the token has it.
    pub fn seal_key(&self, label: &str) -> Result<Option<ObjectHandle>, HsmError> {
        self.find_one("AES seal key", &[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::KeyType(KeyType::AES), Attribute::Label(label.into())])
    }

    /// Generates an AES-256 seal key inside the token: sensitive, never
    /// extractable, usable only to encrypt and decrypt.
    pub fn create_seal_key(&self, label: &str) -> Result<ObjectHandle, HsmError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Label(label.into()),
        ];
        self.session().generate_key(&Mechanism::AesKeyGen, &template).map_err(pkcs11("C_GenerateKey"))
    }

    /// The Ed25519 identity key pair labelled `label`: the private key's
    /// handle and the public key.
    pub fn identity_key(&self, label: &str) -> Result<Option<(ObjectHandle, [u8; 32])>, HsmError> {
        let of = |class| [Attribute::Class(class), Attribute::KeyType(KeyType::EC_EDWARDS), Attribute::Label(label.into())];
        let Some(private) = self.find_one("Ed25519 identity private key", &of(ObjectClass::PRIVATE_KEY))? else {
            return Ok(None);
        };
        let public = self
            .find_one("Ed25519 identity public key", &of(ObjectClass::PUBLIC_KEY))?
            .ok_or_else(|| HsmError::MissingKey { kind: "Ed25519 identity public key", label: label.to_string() })?;
        let attrs = self.session().get_attributes(public, &[AttributeType::EcPoint]).map_err(pkcs11("C_GetAttributeValue"))?;
        let point = attrs
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            })
            .and_then(|p| ed25519_point(&p))
            .ok_or_else(|| HsmError::BadPublicKey { label: label.to_string() })?;
        Ok(Some((private, point)))
    }

    /// The version floor named `name` (value 0 if none): private data
    /// objects in the token, which the host cannot roll back.
    pub fn floor(&self, name: &str) -> Result<FloorObjects, HsmError> {
        let bad = || HsmError::BadFloor { label: name.to_string() };
        let read = |template: &[Attribute], attribute: AttributeType, parse: fn(Vec<u8>) -> Option<u32>| -> Result<Vec<(ObjectHandle, u32)>, HsmError> {
            let session = self.session();
            let objects = session.find_objects(template).map_err(pkcs11("C_FindObjects"))?;
            let mut found = Vec::with_capacity(objects.len());
            for object in objects {
                let attrs = session.get_attributes(object, &[attribute]).map_err(pkcs11("C_GetAttributeValue"))?;
                let value = attrs
                    .into_iter()
                    .find_map(|a| match a {
                        Attribute::Label(bytes) | Attribute::Value(bytes) => parse(bytes),
                        _ => None,
                    })
                    .ok_or_else(bad)?;
                found.push((object, value));
            }
            Ok(found)
        };
        let copies = read(&floor_template(name), AttributeType::Label, |label| {
            let digits = String::from_utf8(label).ok().filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))?;
            digits.parse().ok()
        })?;
        let legacy = read(&legacy_floor_template(name), AttributeType::Value, |value| value.try_into().ok().map(u32::from_be_bytes))?;
        Ok(FloorObjects { copies, legacy })
    }

    /// Sets the version floor named `name`, held in `floor` (as
    /// [`Token::floor`] found it or this call last left it), to `version`
    /// (the caller raises it only), durably before this returns. The
    /// caller keeps one raise of a floor at a time.
    ///
    /// A token lets an application change a storage object's label
    /// (PKCS#11 v2.40, CKA_LABEL is modifiable) but not a data object's
    /// value, so the version is the label: changing it is one rewrite of
    /// one object (SoftHSM2: ~0.5 ms) where writing a new object and
    /// destroying the old one touches the token's object list (~5 ms). A
    /// rewrite cut by a crash can lose the object it rewrites (SoftHSM2
    /// skips an object file it cannot read), so a floor has two copies and
    /// a raise rewrites the lower one: the other still holds the floor
    /// before the raise, and nothing was done under the raised floor
    /// before the raise returned.
    pub fn set_floor(&self, name: &str, floor: &mut FloorObjects, version: u32) -> Result<(), HsmError> {
        let label = version.to_string().into_bytes();
        let full = floor.copies.len() >= FLOOR_COPIES;
        match floor.copies.iter_mut().min_by_key(|(_, v)| *v).filter(|_| full) {
            Some((object, value)) => {
                self.session().update_attributes(*object, &[Attribute::Label(label)]).map_err(pkcs11("C_SetAttributeValue"))?;
                *value = version;
            }
            None => {
                let mut template = floor_template(name).to_vec();
                template.extend([Attribute::Token(true), Attribute::Private(true), Attribute::Label(label)]);
                let object = self.session().create_object(&template).map_err(pkcs11("C_CreateObject"))?;
                floor.copies.push((object, version));
            }
        }
        // Objects of the earlier layout go once the floor is held in the new.
        for (object, _) in std::mem::take(&mut floor.legacy) {
            self.session().destroy_object(object).map_err(pkcs11("C_DestroyObject"))?;
        }
        Ok(())
    }

    /// Generates the Ed25519 identity key pair inside the token; the
    /// private half is sensitive, never extractable, and can only sign.
    pub fn create_identity_key(&self, label: &str) -> Result<(), HsmError> {
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(ED25519_PARAMS.to_vec()),
            Attribute::Label(label.into()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Derive(false),
            Attribute::Label(label.into()),
        ];
        self.session().generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public, &private).map(drop).map_err(pkcs11("C_GenerateKeyPair"))
    }

    /// AES-GCM encryption under `key`; returns ciphertext with the tag.
    pub fn encrypt_gcm(&self, key: ObjectHandle, iv: &[u8; 12], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, HsmError> {
        let mut iv = *iv;
        let params = GcmParams::new(&mut iv, aad, TAG_BITS.into()).map_err(pkcs11("GCM parameters"))?;
        self.session().encrypt(&Mechanism::AesGcm(params), key, plaintext).map_err(pkcs11("C_Encrypt"))
    }

    /// AES-GCM decryption under `key`. The plaintext is zeroized on drop.
    pub fn decrypt_gcm(&self, key: ObjectHandle, iv: &[u8; 12], aad: &[u8], ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, DecryptFailure> {
        let mut iv = *iv;
        let params = GcmParams::new(&mut iv, aad, TAG_BITS.into()).map_err(|e| DecryptFailure::Token(pkcs11("GCM parameters")(e)))?;
        let result = self.session().decrypt(&Mechanism::AesGcm(params), key, ciphertext);
        match result {
            Ok(plaintext) => Ok(Zeroizing::new(plaintext)),
            Err(CkError::Pkcs11(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange | RvError::DataInvalid | RvError::DataLenRange, _)) => {
                Err(DecryptFailure::Authentication)
            }
            // Tokens disagree on how to report a bad tag: SoftHSM2 says
            // CKR_GENERAL_ERROR, as it would for a failing device. A round
            // trip under the same key tells the two apart, so that tampering
            // is reported as tampering and a broken token as broken.
            Err(e) => match self.gcm_round_trip(key) {
                Ok(()) => Err(DecryptFailure::Authentication),
                Err(_) => Err(DecryptFailure::Token(pkcs11("C_Decrypt")(e))),
            },
        }
    }

    fn gcm_round_trip(&self, key: ObjectHandle) -> Result<(), HsmError> {
        let mut iv = [0u8; 12];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut iv);
        let probe = b"conclave/hsm/probe";
        let sealed = self.encrypt_gcm(key, &iv, b"probe", probe)?;
        let params = GcmParams::new(&mut iv, b"probe", TAG_BITS.into()).map_err(pkcs11("GCM parameters"))?;
        let opened = self.session().decrypt(&Mechanism::AesGcm(params), key, &sealed).map_err(pkcs11("C_Decrypt"))?;
        if opened != probe {
            return Err(HsmError::Pkcs11 { op: "C_Decrypt", source: CkError::InvalidValue });
        }
        Ok(())
    }

    /// Signs `message` with the Ed25519 key `key` (pure Ed25519, RFC 8032).
    pub fn sign_ed25519(&self, key: ObjectHandle, message: &[u8]) -> Result<[u8; 64], HsmError> {
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let signature = self.session().sign(&mechanism, key, message).map_err(pkcs11("C_Sign"))?;
        signature.try_into().map_err(|_| HsmError::Pkcs11 { op: "C_Sign", source: CkError::InvalidValue })
    }
}

/// CKA_EC_POINT of an Ed25519 key: a DER OCTET STRING around the 32-byte
/// encoding (PKCS#11 3.0), or the raw 32 bytes (some tokens).
fn floor_template(name: &str) -> [Attribute; 3] {
    [Attribute::Class(ObjectClass::DATA), Attribute::Application(b"conclave-floor/2".to_vec()), Attribute::ObjectId(name.into())]
}

/// A floor as earlier builds kept it: one object labelled with its name,
/// the version as CKA_VALUE (4 bytes, big-endian). Read, and destroyed
/// at the floor's next raise.
fn legacy_floor_template(name: &str) -> [Attribute; 3] {
    [Attribute::Class(ObjectClass::DATA), Attribute::Application(b"conclave-floor".to_vec()), Attribute::Label(name.into())]
}

fn ed25519_point(bytes: &[u8]) -> Option<[u8; 32]> {
    let raw = match bytes {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
        raw if raw.len() == 32 => raw,
        _ => return None,
    };
    raw.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_points_decode_in_both_encodings_and_nothing_else() {
        let key = [7u8; 32];
        let mut der = vec![0x04, 0x20];
        der.extend_from_slice(&key);
        assert_eq!(ed25519_point(&der), Some(key));
        assert_eq!(ed25519_point(&key), Some(key));
        assert_eq!(ed25519_point(&der[..33]), None);
        assert_eq!(ed25519_point(&[0x04, 0x21, 0]), None);
    }

    #[test]
    fn pins_come_trimmed_from_files_and_bad_ones_are_named() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("pin");
        std::fs::write(&file, "1234\n").unwrap();
        let pin = PinSource::File(file.clone()).read().unwrap();
        assert_eq!(secrecy::ExposeSecret::expose_secret(&pin), "1234");
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(PinSource::File(file).read(), Err(HsmError::PinShape(_))));
        assert!(matches!(PinSource::File(d.path().join("absent")).read(), Err(HsmError::PinFile { .. })));
        assert!(matches!(PinSource::Env("CONCLAVE_TEST_NO_SUCH_PIN_VAR".into()).read(), Err(HsmError::PinEnv(_))));
    }
}
