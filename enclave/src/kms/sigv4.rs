//! AWS Signature Version 4 for the enclave's KMS calls: a `POST /` with a
//! JSON body and no query, which is all KMS needs. The scheme is AWS's
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>);
//! the primitives are `hmac` and `sha2`.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Temporary credentials of the instance role, handed to the enclave by its
/// host. They let their holder call KMS, which the host can do anyway; the
/// key policy still releases data keys only to an attested enclave.
#[derive(Clone)]
pub struct Credentials {
    /// `AccessKeyId`.
    pub access_key_id: String,
    /// `SecretAccessKey`.
    pub secret_access_key: Zeroizing<String>,
    /// `Token`, for temporary credentials.
    pub session_token: Option<String>,
}

impl From<conclave_proto::link::AwsCredentials> for Credentials {
    fn from(c: conclave_proto::link::AwsCredentials) -> Self {
        Credentials { access_key_id: c.access_key_id, secret_access_key: Zeroizing::new(c.secret_access_key), session_token: c.session_token }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// Where a request is signed for.
pub struct Scope<'a> {
    /// e.g. `eu-west-1`.
    pub region: &'a str,
    /// e.g. `kms`.
    pub service: &'a str,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Signs a request to `/` without a query. `headers` are the headers to
/// sign (names in any case, `host` among them); `amz_date` is
/// `YYYYMMDDTHHMMSSZ`. Returns the headers to add: `x-amz-date`, the
/// session token if any, and `authorization`.
pub fn sign(credentials: &Credentials, scope: &Scope<'_>, method: &str, headers: &[(&str, &str)], body: &[u8], amz_date: &str) -> Vec<(String, String)> {
    let mut signed: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string())).collect();
    signed.push(("x-amz-date".into(), amz_date.into()));
    if let Some(token) = &credentials.session_token {
        signed.push(("x-amz-security-token".into(), token.clone()));
    }
    signed.sort();
    let canonical_headers: String = signed.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed_names = signed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(";");
    let canonical_request = format!("{method}\n/\n\n{canonical_headers}\n{signed_names}\n{}", hex::encode(Sha256::digest(body)));
    let date = &amz_date[..8];
    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let string_to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{credential_scope}\n{}", hex::encode(Sha256::digest(canonical_request.as_bytes())));
    let secret = Zeroizing::new(format!("AWS4{}", credentials.secret_access_key.as_str()));
    let key = [date, scope.region, scope.service, "aws4_request"]
        .iter()
        .fold(Zeroizing::new(secret.as_bytes().to_vec()), |key, part| Zeroizing::new(hmac(&key, part.as_bytes()).to_vec()));
    let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
    let mut out = vec![("x-amz-date".to_string(), amz_date.to_string())];
    if let Some(token) = &credentials.session_token {
        out.push(("x-amz-security-token".into(), token.clone()));
    }
    out.push((
        "authorization".into(),
        format!("AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed_names}, Signature={signature}", credentials.access_key_id),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Credentials {
        // AWS's published test-suite credentials (aws-sig-v4-test-suite).
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Zeroizing::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            session_token: None,
        }
    }

    fn authorization(method: &str, credentials: &Credentials) -> String {
        let scope = Scope { region: "us-east-1", service: "service" };
        let added = sign(credentials, &scope, method, &[("Host", "example.amazonaws.com")], b"", "20150830T123600Z");
        added.into_iter().find(|(n, _)| n == "authorization").unwrap().1
    }

    #[test]
    fn signatures_match_aws_published_test_suite() {
        // get-vanilla and post-vanilla from AWS's SigV4 test suite.
        let prefix = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=";
        assert_eq!(authorization("GET", &example()), format!("{prefix}5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"));
        assert_eq!(authorization("POST", &example()), format!("{prefix}5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"));
    }

    #[test]
    fn a_session_token_is_signed_and_sent() {
        let with_token = Credentials { session_token: Some("TOKEN".into()), ..example() };
        let auth = authorization("POST", &with_token);
        assert!(auth.contains("SignedHeaders=host;x-amz-date;x-amz-security-token,"), "{auth}");
        assert_ne!(auth, authorization("POST", &example()));
    }
}
