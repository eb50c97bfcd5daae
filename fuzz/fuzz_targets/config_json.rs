//! Config loader/validator on arbitrary bytes as JSON text.
//!
//! Invariants beyond "no panic": parse is deterministic; an error list is
//! never empty and every error names its JSON path unless the text is not
//! a JSON object at all; an accepted snapshot is self-consistent (listeners
//! point at routes on their address, hosts route, backends have ports).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[path = "common_config.rs"]
mod common_config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match serde_json::from_str::<Value>(text) {
        Err(_) => common_config::check(text, None),
        Ok(mut root) => {
            if common_config::offline(&mut root) {
                // Rewritten document: validate that instead.
                let text = root.to_string();
                common_config::check(&text, Some(&root));
            } else {
                common_config::check(text, Some(&root));
            }
        }
    }
});
