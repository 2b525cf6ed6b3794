//! Triton's `config.pbtxt` reader (a repository file is operator input, but
//! a crash on a bad one is still a crash), and the JSON form the model
//! configuration endpoint answers with.
//! Properties: any text gives a configuration or an error, never a panic;
//! an error (bad text, or a field this subset leaves out) names a
//! position inside the text; a configuration read back
//! from its own text format, and from its own JSON, is the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serving_proto::model_config::{self, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The descriptor pool is built on first use: not the input's cost.
    let _ = model_config::parse_text("");
    serving_fuzz::reset();
    let parsed = model_config::parse_text(text);
    serving_fuzz::assert_bounded(text.len(), "parse_text");
    match parsed {
        Ok(config) => {
            let again = model_config::parse_text(&model_config::to_text(&config))
                .expect("a configuration's own text format reads back");
            assert_eq!(again, config);
            let json = model_config::to_json(&config).to_string();
            let back = model_config::from_json(&json).expect("its own JSON reads back");
            assert_eq!(back, config);
        }
        Err(ConfigError::Text { line, column, .. })
        | Err(ConfigError::Unsupported { line, column, .. }) => {
            assert!(line >= 1 && column >= 1);
            assert!(line <= text.matches('\n').count() + 1);
        }
        Err(e) => panic!("text gave a non-text error: {e}"),
    }
});
