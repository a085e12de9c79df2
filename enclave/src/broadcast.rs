//! One broadcast round: every party sends one value to all the others and
//! gets each of theirs. It is the whole of several small protocols here
//! (pooled signing, FROST's nonce commitments, the stored-share and aux
//! acknowledgements, the velocity tally).

use futures::SinkExt;
use round_based::rounds_router::simple_store::{RoundInput, RoundMsgs};
use round_based::rounds_router::{RoundMessage, RoundsRouter};
use round_based::{Delivery, Mpc, MpcParty, Outgoing, ProtocolMessage};

/// The round did not complete: the transport failed, or a peer's message
/// was not this round's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RoundFailed(String);

/// Sends `mine` as party `i` of `n` to every other party, and returns
/// what each of them sent (by party index; [`RoundMsgs::into_vec_including_me`]
/// puts `mine` back in its place).
pub async fn exchange<P, M, T>(party: P, i: u16, n: u16, mine: T) -> Result<RoundMsgs<T>, RoundFailed>
where
    P: Mpc<ProtocolMessage = M>,
    M: ProtocolMessage + RoundMessage<T> + Send + 'static,
    T: Send + 'static,
{
    let MpcParty { delivery, .. } = party.into_party();
    let (incoming, mut outgoing) = delivery.split();
    let mut router = RoundsRouter::<M>::builder();
    let round = router.add_round(RoundInput::<T>::broadcast(i, n));
    let mut router = router.listen(incoming);
    outgoing.send(Outgoing::broadcast(M::to_protocol_message(mine))).await.map_err(|e| RoundFailed(e.to_string()))?;
    router.complete(round).await.map_err(|e| RoundFailed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, round_based::ProtocolMessage)]
    enum Msg {
        Value(u32),
    }

    #[test]
    fn every_party_gets_every_value_in_party_order_on_threads_of_their_own() {
        let all = crate::session::run_threaded(3, |i, party: crate::session::Party<Msg>| {
            let mine = 10 * u32::from(i);
            futures::executor::block_on(exchange(party, i, 3, mine)).map(|theirs| theirs.into_vec_including_me(mine))
        });
        for got in all {
            assert_eq!(got.unwrap(), vec![0, 10, 20]);
        }
    }
}
