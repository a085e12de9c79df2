//! Wallets made by the release before CGGMP24 keep their keys.

use conclave_proto::request::SignPayload;
use conclave_proto::{Scheme, WalletId};
use conclave_tests::adversary::Adversary;
use conclave_tests::{Cluster, Mode};

/// Writes `tests/fixtures/legacy-cggmp21/`: a 2-of-3 dev cluster's state
/// with one ECDSA and one EdDSA wallet, made by the CGGMP21 release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the fixture with the code it runs; the fixture must come from the CGGMP21 release"]
async fn write_legacy_fixture() {
    let mut cluster = Cluster::start_in(Mode::Dev, 3).await;
    let client = cluster.client().await;
    let adversary = Adversary::connect(&cluster.nats_url()).await;
    let wallet = WalletId::new("legacy").unwrap();
    let mut records = serde_json::Map::new();
    for scheme in [Scheme::Ecdsa, Scheme::Eddsa] {
        client.keygen(&wallet, scheme, 2, None).await.expect("keygen");
        client.sign(&wallet, scheme, SignPayload::Message(b"made by cggmp21".to_vec()), vec![], None).await.expect("sign");
        let record = adversary.wallet_record(&wallet, scheme).await;
        records.insert(scheme.as_str().to_string(), serde_json::to_value(record).unwrap());
    }
    let to = conclave_tests::workspace().join("tests/fixtures/legacy-cggmp21");
    let _ = std::fs::remove_dir_all(&to);
    cluster.save_state(&to);
    std::fs::write(to.join("records.json"), serde_json::to_vec_pretty(&records).unwrap()).unwrap();
}
