//! Sample prospect data shared by the integration tests and the benches.

/// A CSV of roughly `bytes` bytes with a header row: ids, regions, amounts, quoted notes.
pub fn csv_of_size(bytes: usize) -> Vec<u8> {
    let mut out = b"id,region,amount,note\n".to_vec();
    let mut i = 0u64;
    while out.len() < bytes {
        out.extend_from_slice(
            format!(
                "{i},{},{}.{:02},\"row {i}, quoted\"\n",
                ["north", "south", "east", "west"][(i % 4) as usize],
                i * 7 % 1000,
                i % 100
            )
            .as_bytes(),
        );
        i += 1;
    }
    out
}
