//! The envelope KMS puts a data key in for an attested recipient
//! (`CiphertextForRecipient`): a CMS `ContentInfo` holding `EnvelopedData`
//! (RFC 5652 section 6) with one `KeyTransRecipientInfo` (RSAES-OAEP, the
//! enclave's one-use key) and content encrypted with AES-256-CBC.
//!
//! KMS writes it in BER with indefinite lengths and the encrypted content
//! in chunks, which DER decoders refuse; this reader takes BER (definite or
//! indefinite lengths, primitive or chunked strings) but only the shape
//! above. The bytes come through the host: every length is checked against
//! what is left, nesting is bounded, and anything else is [`CmsError`].

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CiphertextForRecipient: {0}")]
pub struct CmsError(pub &'static str);

/// What the recipient needs from the envelope.
pub struct Envelope {
    /// The content-encryption key, encrypted to the recipient's RSA key.
    pub encrypted_key: Vec<u8>,
    /// AES-256-CBC IV.
    pub iv: [u8; 16],
    /// The encrypted content (the data key, padded).
    pub ciphertext: Vec<u8>,
}

/// The largest envelope accepted: a 4096-bit key's encrypted key and a
/// 32-byte data key take under 1 KiB.
pub const MAX_ENVELOPE: usize = 16 * 1024;
const MAX_DEPTH: usize = 12;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const CONSTRUCTED: u8 = 0x20;
const CONTEXT_0: u8 = 0xa0;
const CONTEXT_0_PRIMITIVE: u8 = 0x80;

// 1.2.840.113549.1.7.3, 1.2.840.113549.1.7.1, 1.2.840.113549.1.1.7,
// 2.16.840.1.101.3.4.1.42
const OID_ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const OID_RSAES_OAEP: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07];
const OID_AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];

/// One BER element: its identifier octet and its contents (for an
/// indefinite length, the children without the end-of-contents octets).
struct Element<'a> {
    tag: u8,
    contents: &'a [u8],
}

/// Reads the elements of a contents octet string one by one.
struct Reader<'a> {
    rest: &'a [u8],
    depth: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], depth: usize) -> Result<Self, CmsError> {
        if depth > MAX_DEPTH {
            return Err(CmsError("nested too deeply"));
        }
        Ok(Reader { rest: bytes, depth })
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn next(&mut self) -> Result<Element<'a>, CmsError> {
        let (&tag, after_tag) = self.rest.split_first().ok_or(CmsError("truncated"))?;
        if tag & 0x1f == 0x1f {
            return Err(CmsError("unexpected high tag number"));
        }
        let (&first, mut after_len) = after_tag.split_first().ok_or(CmsError("truncated"))?;
        let contents;
        if first == 0x80 {
            if tag & CONSTRUCTED == 0 {
                return Err(CmsError("indefinite length on a primitive element"));
            }
            // Walk the children to find this element's end-of-contents.
            let mut children = Reader::new(after_len, self.depth + 1)?;
            loop {
                if children.rest.starts_with(&[0, 0]) {
                    let used = after_len.len() - children.rest.len();
                    contents = &after_len[..used];
                    after_len = &children.rest[2..];
                    break;
                }
                children.next()?;
            }
            self.rest = after_len;
        } else {
            let len = if first < 0x80 {
                usize::from(first)
            } else {
                let count = usize::from(first & 0x7f);
                if count > 4 || after_len.len() < count {
                    return Err(CmsError("bad length"));
                }
                let (digits, rest) = after_len.split_at(count);
                after_len = rest;
                digits.iter().fold(0usize, |n, d| (n << 8) | usize::from(*d))
            };
            if len > after_len.len() {
                return Err(CmsError("truncated"));
            }
            let (c, rest) = after_len.split_at(len);
            contents = c;
            self.rest = rest;
        }
        Ok(Element { tag, contents })
    }

    fn expect(&mut self, tag: u8, what: &'static str) -> Result<Element<'a>, CmsError> {
        let element = self.next()?;
        if element.tag != tag {
            return Err(CmsError(what));
        }
        Ok(element)
    }

    fn children(&self, element: &Element<'a>) -> Result<Reader<'a>, CmsError> {
        Reader::new(element.contents, self.depth + 1)
    }

    /// A string of `primitive_tag`, primitive or chunked (constructed, of
    /// OCTET STRING chunks, themselves possibly chunked).
    fn string(&mut self, primitive_tag: u8, what: &'static str) -> Result<Vec<u8>, CmsError> {
        let element = self.next()?;
        let mut out = Vec::new();
        self.collect_string(&element, primitive_tag, what, &mut out)?;
        Ok(out)
    }

    fn collect_string(&self, element: &Element<'a>, primitive_tag: u8, what: &'static str, out: &mut Vec<u8>) -> Result<(), CmsError> {
        if element.tag == primitive_tag {
            out.extend_from_slice(element.contents);
            return Ok(());
        }
        if element.tag != primitive_tag | CONSTRUCTED {
            return Err(CmsError(what));
        }
        let mut chunks = self.children(element)?;
        while !chunks.is_empty() {
            let chunk = chunks.next()?;
            chunks.collect_string(&chunk, OCTET_STRING, what, out)?;
        }
        Ok(())
    }
}

/// Small non-negative INTEGER.
fn small_integer(element: &Element<'_>) -> Result<u8, CmsError> {
    match element.contents {
        [v] if *v < 0x80 => Ok(*v),
        _ => Err(CmsError("unexpected version")),
    }
}

/// Parses a `CiphertextForRecipient`.
pub fn parse(bytes: &[u8]) -> Result<Envelope, CmsError> {
    if bytes.len() > MAX_ENVELOPE {
        return Err(CmsError("too large"));
    }
    let mut top = Reader::new(bytes, 0)?;
    let content_info = top.expect(SEQUENCE, "not a ContentInfo")?;
    if !top.is_empty() {
        return Err(CmsError("trailing bytes"));
    }
    let mut ci = top.children(&content_info)?;
    if ci.expect(OID, "not a ContentInfo")?.contents != OID_ENVELOPED_DATA {
        return Err(CmsError("not EnvelopedData"));
    }
    let explicit = ci.expect(CONTEXT_0, "EnvelopedData missing")?;
    let mut explicit = ci.children(&explicit)?;
    let enveloped = explicit.expect(SEQUENCE, "EnvelopedData is not a SEQUENCE")?;
    let mut ed = explicit.children(&enveloped)?;
    // Version 2 when the recipient is named by subject key identifier,
    // 0 when by issuer and serial (RFC 5652 6.1).
    if !matches!(small_integer(&ed.expect(INTEGER, "EnvelopedData version missing")?)?, 0 | 2) {
        return Err(CmsError("unexpected EnvelopedData version"));
    }
    if ed.peek_tag() == Some(CONTEXT_0) {
        ed.next()?; // originatorInfo: certificates the recipient does not need
    }
    let recipients = ed.expect(SET, "recipientInfos missing")?;
    let mut recipients = ed.children(&recipients)?;
    let ktri = recipients.expect(SEQUENCE, "recipient is not a KeyTransRecipientInfo")?;
    if !recipients.is_empty() {
        return Err(CmsError("more than one recipient"));
    }
    let mut ktri = recipients.children(&ktri)?;
    if !matches!(small_integer(&ktri.expect(INTEGER, "recipient version missing")?)?, 0 | 2) {
        return Err(CmsError("unexpected recipient version"));
    }
    ktri.next()?; // rid: the enclave has one key; it needs no name for it
    let algorithm = ktri.expect(SEQUENCE, "key encryption algorithm missing")?;
    // The OAEP parameters (SHA-256, MGF1-SHA-256) are checked by decryption
    // itself: any other hash fails to decrypt.
    if ktri.children(&algorithm)?.expect(OID, "key encryption algorithm missing")?.contents != OID_RSAES_OAEP {
        return Err(CmsError("key is not encrypted with RSAES-OAEP"));
    }
    let encrypted_key = ktri.string(OCTET_STRING, "encrypted key missing")?;
    let eci = ed.expect(SEQUENCE, "EncryptedContentInfo missing")?;
    let mut eci = ed.children(&eci)?;
    if eci.expect(OID, "content type missing")?.contents != OID_DATA {
        return Err(CmsError("content is not data"));
    }
    let algorithm = eci.expect(SEQUENCE, "content encryption algorithm missing")?;
    let mut algorithm = eci.children(&algorithm)?;
    if algorithm.expect(OID, "content encryption algorithm missing")?.contents != OID_AES256_CBC {
        return Err(CmsError("content is not encrypted with AES-256-CBC"));
    }
    let iv: [u8; 16] = algorithm.string(OCTET_STRING, "IV missing")?.try_into().map_err(|_| CmsError("IV is not 16 bytes"))?;
    // [0] IMPLICIT OCTET STRING: primitive 0x80, or 0xa0 with chunks.
    let ciphertext = eci.string(CONTEXT_0_PRIMITIVE, "encrypted content missing")?;
    if ciphertext.is_empty() || ciphertext.len() % 16 != 0 {
        return Err(CmsError("encrypted content is not whole AES blocks"));
    }
    Ok(Envelope { encrypted_key, iv, ciphertext })
}
