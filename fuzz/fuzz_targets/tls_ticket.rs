//! Session ticket decryption takes attacker-controlled bytes: any input is
//! refused or, only for a ticket this key set made, gives back its state;
//! never a panic. A ticket made from the input round-trips, and with any one
//! byte changed it is refused.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ringmesh::tls::tickets::TicketKeys;
use rustls::server::ProducesTickets;

fuzz_target!(|data: &[u8]| {
    static KEYS: OnceLock<TicketKeys> = OnceLock::new();
    let keys = KEYS.get_or_init(|| TicketKeys::generate().expect("keys"));
    assert!(keys.decrypt(data).is_none(), "forged a ticket");
    let t = keys.encrypt(data).expect("encrypt");
    assert_eq!(keys.decrypt(&t).as_deref(), Some(data));
    if !t.is_empty() {
        let mut bad = t.clone();
        let i = data.len() % bad.len();
        bad[i] ^= 0x80;
        assert!(keys.decrypt(&bad).is_none(), "tampered byte {i} accepted");
    }
});
