//! Every check, by area. `docs/conformance.md` lists them with what they
//! send, what they expect and the spec line they come from.

mod errors;
mod extensions;
mod health;
mod limits;
mod models;
mod replicas;
mod roundtrip;
mod sequences;
mod values;

pub use errors::{MS_REST_BODIES, MS_REST_URLS};

use crate::check::Check;

/// Every check, in report order.
pub fn all() -> Vec<Check> {
    let mut all = roundtrip::checks();
    all.extend(limits::checks());
    all.extend(errors::checks());
    all.extend(health::checks());
    all.extend(replicas::checks());
    all.extend(extensions::checks());
    all.extend(sequences::checks());
    all.extend(models::checks());
    all
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_check_is_documented_and_named_once() {
        let doc = include_str!("../../../docs/conformance.md");
        let mut names = std::collections::BTreeSet::new();
        for check in super::all() {
            assert!(names.insert(check.name), "{} twice", check.name);
            assert!(
                doc.contains(&format!("| `{}` |", check.name)),
                "docs/conformance.md does not list {}",
                check.name
            );
        }
    }
}
