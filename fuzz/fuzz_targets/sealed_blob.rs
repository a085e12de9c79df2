//! What the signer reads of a blob the host hands back before any key is
//! touched: the sealed container and the store's file names.
#![no_main]
use conclave_proto::sealed::SealedBlob;
use conclave_proto::store::parse_blob_file_name;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(blob) = SealedBlob::parse(data) {
        assert_eq!(blob.encode(), data, "a parsed container re-encodes to itself");
    }
    if let Ok(name) = std::str::from_utf8(data) {
        let _ = parse_blob_file_name(name);
    }
});
