//! MindSpore Serving REST URLs: `/model/{servable}[/version/{N}]:{method}`.
//!
//! Matched from the start of the path by its grammar, not by substring as
//! MindSpore does: a path is a MindSpore URL only when its first segment is
//! `model` ([`is_predict_path`]), and then it must be exactly
//! `/model/{servable}`, optionally `/version/{N}`, then `:{method}`. A
//! servable whose name contains `model` or `version` works, a query string
//! is not part of the method name, and no prefix or extra segment is
//! skipped (MindSpore skips them, which let `/v2/health/../model/...` reach
//! a servable past a path-prefix rule). The error texts are MindSpore's
//! (spec §3.1).

use crate::text::quote;

/// The target of a MindSpore REST request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PredictUrl {
    /// Servable name.
    pub servable: String,
    /// Version; 0 (or absent) means the newest.
    pub version: u64,
    /// Method name.
    pub method: String,
}

/// Why a URL does not name a servable method.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// No `model/{name}` segment pair.
    #[error("please check url, the keyword:[model] must contain.")]
    Model,
    /// A version that is not a number.
    #[error("please check url, the keyword:[version] value invalid, request version number {}", quote(.0))]
    VersionInvalid(String),
    /// A version below 0 or at least 2^32 - 1.
    #[error("please check url, version number range failed, request version number {}", quote(.0))]
    VersionRange(String),
    /// No `:{method}` after the path.
    #[error("please check url, the keyword:[service method] must contain.")]
    Method,
    /// A segment the grammar has no place for (MindSpore skips it).
    #[error(
        "please check url, unexpected segment '{}': the url must be /model/{{servable}}[/version/{{N}}]:{{method}}",
        quote(.0)
    )]
    Segment(String),
}

/// The largest version a REST URL may name (MindSpore parses into uint32 and
/// rejects `2^32 - 1` itself).
pub const MAX_VERSION: u64 = u32::MAX as u64 - 1;

/// Whether `path` is for MindSpore's REST grammar: its first segment is
/// `model` (`/model`, `/model/...` or `/model:...`). Other paths are not
/// MindSpore URLs at all, whatever they contain further on.
pub fn is_predict_path(path: &str) -> bool {
    path.strip_prefix("/model")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', ':']))
}

/// Parses a request path such as `/model/add/version/1:add_common`. A query
/// string (`?...`) is ignored.
pub fn parse(path_and_query: &str) -> Result<PredictUrl, UrlError> {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p);
    if !is_predict_path(path) {
        return Err(UrlError::Model);
    }
    let (segments, method) = match path.split_once(':') {
        Some((segments, method)) => (segments, Some(method)),
        None => (path, None),
    };
    let mut parts = segments.split('/').skip(2);
    let servable = parts
        .next()
        .filter(|s| !s.is_empty())
        .ok_or(UrlError::Model)?;
    let version = match parts.next() {
        None => 0,
        Some("version") => parse_version(parts.next().unwrap_or(""))?,
        Some(other) => return Err(UrlError::Segment(other.to_owned())),
    };
    if let Some(extra) = parts.next() {
        return Err(UrlError::Segment(extra.to_owned()));
    }
    let method = method.filter(|m| !m.is_empty()).ok_or(UrlError::Method)?;
    Ok(PredictUrl {
        servable: servable.to_owned(),
        version,
        method: method.to_owned(),
    })
}

fn parse_version(text: &str) -> Result<u64, UrlError> {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::VersionInvalid(text.to_owned()));
    }
    if text.starts_with('-') && digits.bytes().any(|b| b != b'0') {
        return Err(UrlError::VersionRange(text.to_owned()));
    }
    match digits.parse::<u64>() {
        Ok(v) if v <= MAX_VERSION => Ok(v),
        _ => Err(UrlError::VersionRange(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> (String, u64, String) {
        let u = parse(path).unwrap();
        (u.servable, u.version, u.method)
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(
            ok("/model/add:add_common"),
            ("add".into(), 0, "add_common".into())
        );
        assert_eq!(
            ok("/model/add/version/1:add_common"),
            ("add".into(), 1, "add_common".into())
        );
        assert_eq!(ok("/model/add:m?x=1"), ("add".into(), 0, "m".into()));
        assert_eq!(
            ok("/model/my_version_model:m"),
            ("my_version_model".into(), 0, "m".into())
        );
        assert_eq!(
            ok("/model/model/version/2:version"),
            ("model".into(), 2, "version".into())
        );
        assert_eq!(ok("/model/add/version/4294967294:m").1, 4294967294);
    }

    #[test]
    fn only_paths_starting_with_the_model_segment_are_mindspore_urls() {
        for path in ["/model", "/model/", "/model:m", "/model/add:m", "/model//x"] {
            assert!(is_predict_path(path), "{path}");
        }
        for path in [
            "",
            "/",
            "/models/add:m",
            "/modelx/add:m",
            "/Model/add:m",
            "//model/add:m",
            "/v2/health/../model/add:add_common",
            "/v2/health/model/add:add_common",
            "/prefix/model/add:m",
            "/version/0/model/add:add_cast",
        ] {
            assert!(!is_predict_path(path), "{path}");
            assert_eq!(parse(path), Err(UrlError::Model), "{path}");
        }
    }

    #[test]
    fn segments_outside_the_grammar_are_refused() {
        let e = |p: &str| parse(p).unwrap_err().to_string();
        assert_eq!(
            e("/model/add/extra:m"),
            "please check url, unexpected segment 'extra': the url must be /model/{servable}[/version/{N}]:{method}"
        );
        assert_eq!(
            parse("/model/add/version/1/x:m"),
            Err(UrlError::Segment("x".into()))
        );
        assert_eq!(parse("/model/add/:m"), Err(UrlError::Segment("".into())));
        assert_eq!(
            parse("/model/add/version/1/:m"),
            Err(UrlError::Segment("".into()))
        );
        let long = format!("/model/add/{}:m", "z".repeat(1 << 20));
        assert!(e(&long).len() < 300);
    }

    #[test]
    fn error_texts_are_mindspores() {
        let e = |p: &str| parse(p).unwrap_err().to_string();
        assert_eq!(
            e("/model:add_common"),
            "please check url, the keyword:[model] must contain."
        );
        assert_eq!(
            e("/model/:add_common"),
            "please check url, the keyword:[model] must contain."
        );
        assert_eq!(
            e("/model/add"),
            "please check url, the keyword:[service method] must contain."
        );
        assert_eq!(
            e("/model/add:"),
            "please check url, the keyword:[service method] must contain."
        );
        assert_eq!(
            e("/model/add/version/-1:add_common"),
            "please check url, version number range failed, request version number -1"
        );
        assert_eq!(
            e("/model/add/version/4294967295:m"),
            "please check url, version number range failed, request version number 4294967295"
        );
        assert_eq!(
            e("/model/add/version/abc:m"),
            "please check url, the keyword:[version] value invalid, request version number abc"
        );
    }
}
