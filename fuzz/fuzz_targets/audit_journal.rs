//! The host's audit journal, as read back from disk: any bytes end in
//! whole records and a tail that is none, never a panic; the records read
//! are exactly the bytes they came from.
#![no_main]

use conclave_proto::store::{journal_record, read_journal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut records = Vec::new();
    let end = read_journal(&mut &data[..], data.len() as u64, &mut |_, version, content| {
        records.push((version, content));
        true
    })
    .expect("reading a slice within its length");
    let again: Vec<u8> = records.iter().flat_map(|(version, content)| journal_record(*version, content)).collect();
    assert_eq!(&again[..], &data[..end as usize]);
});
