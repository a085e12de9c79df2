//! Asking each signer about its policy, and submitting a policy to every
//! signer. Answers count only when signed by the pinned node over this
//! client's fresh nonce, so a host can neither forge nor replay one.

use crate::{Client, ClientError};
use conclave_proto::govern::{govern_subject, Fact, GovernAnswer, GovernAsk, GovernQuery, Saying};
use conclave_proto::policy::{AdminSignature, Ed25519Key, SignedPolicy};
use conclave_proto::{NodeId, PROTOCOL_VERSION};
use ed25519_dalek::Signer;
use rand_core::RngCore;

/// How long one signer is given to answer.
const GOVERN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// An admin's signature on a policy document (`conclave policy sign`).
pub fn sign_policy(document: &str, admin: &ed25519_dalek::SigningKey) -> AdminSignature {
    AdminSignature { admin: Ed25519Key(admin.verifying_key().to_bytes()), signature: admin.sign(&SignedPolicy::signing_bytes(document)).to_bytes() }
}

impl Client {
    /// Asks every pinned node's signer; one answer (or failure) per node,
    /// in roster order.
    pub async fn govern_all(&self, ask: GovernAsk) -> Vec<(NodeId, Result<Fact, ClientError>)> {
        let nodes: Vec<NodeId> = self.roster().nodes().cloned().collect();
        let asks = nodes.iter().map(|node| self.govern(node, ask.clone()));
        nodes.iter().cloned().zip(futures::future::join_all(asks).await).collect()
    }

    /// Asks `node`'s signer, and checks that the answer is its, signed over
    /// this question's nonce.
    pub async fn govern(&self, node: &NodeId, ask: GovernAsk) -> Result<Fact, ClientError> {
        let mut nonce = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut nonce);
        let query = serde_json::to_vec(&GovernQuery { v: PROTOCOL_VERSION, nonce, ask }).expect("queries serialise");
        let reply = match tokio::time::timeout(GOVERN_TIMEOUT, self.nats().request(govern_subject(node), query.into())).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => return Err(ClientError::Nats(format!("{node} is not running"))),
            Ok(Err(e)) => return Err(ClientError::Nats(format!("{node}: {e}"))),
            Err(_) => return Err(ClientError::Nats(format!("{node}: no answer within {GOVERN_TIMEOUT:?}"))),
        };
        let answer = GovernAnswer::decode(&reply.payload).map_err(|e| ClientError::BadResult(format!("{node}: {e}")))?;
        let said = answer.result.map_err(ClientError::Request)?;
        let Saying { node: said_by, nonce: answered, fact, .. } = self.roster().saying(node, &said)?;
        if said_by != *node || answered != nonce {
            return Err(ClientError::Unauthenticated(format!("{node}'s answer is not to this question (a replay)")));
        }
        Ok(fact)
    }
}
