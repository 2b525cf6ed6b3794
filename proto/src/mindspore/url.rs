//! MindSpore Serving REST URLs: `/model/{servable}[/version/{N}]:{method}`.
//!
//! Parsed by path segments, not by substring as MindSpore does, so a servable
//! whose name contains `model` or `version` works, and a query string is not
//! part of the method name. The error texts are MindSpore's (spec §3.1).
//! Segments may come in either order, and segments other than `model` and
//! `version` pairs (a proxy prefix, say) are ignored, as MindSpore does.

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
    #[error("please check url, the keyword:[version] value invalid, request version number {0}")]
    VersionInvalid(String),
    /// A version below 0 or at least 2^32 - 1.
    #[error("please check url, version number range failed, request version number {0}")]
    VersionRange(String),
    /// No `:{method}` after the path.
    #[error("please check url, the keyword:[service method] must contain.")]
    Method,
}

/// The largest version a REST URL may name (MindSpore parses into uint32 and
/// rejects `2^32 - 1` itself).
pub const MAX_VERSION: u64 = u32::MAX as u64 - 1;

/// Parses a request path such as `/model/add/version/1:add_common`. A query
/// string (`?...`) is ignored.
pub fn parse(path_and_query: &str) -> Result<PredictUrl, UrlError> {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p);
    let (segments, method) = match path.split_once(':') {
        Some((segments, method)) => (segments, Some(method)),
        None => (path, None),
    };
    let parts: Vec<&str> = segments.split('/').filter(|s| !s.is_empty()).collect();
    let mut servable = None;
    let mut version = None;
    let mut i = 0;
    while i < parts.len() {
        match parts[i] {
            "model" if servable.is_none() => {
                servable = parts.get(i + 1).copied();
                i += 2;
            }
            "version" if version.is_none() => {
                version = Some(parts.get(i + 1).copied().unwrap_or(""));
                i += 2;
            }
            _ => i += 1,
        }
    }
    let servable = servable.filter(|s| !s.is_empty()).ok_or(UrlError::Model)?;
    let version = match version {
        None => 0,
        Some(text) => parse_version(text)?,
    };
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
        assert_eq!(
            ok("/version/0/model/add:add_common"),
            ("add".into(), 0, "add_common".into())
        );
        assert_eq!(ok("/prefix/model/add:m?x=1"), ("add".into(), 0, "m".into()));
        assert_eq!(
            ok("/model/my_version_model:m"),
            ("my_version_model".into(), 0, "m".into())
        );
        assert_eq!(ok("/model/add/version/4294967294:m").1, 4294967294);
    }

    #[test]
    fn error_texts_are_mindspores() {
        let e = |p: &str| parse(p).unwrap_err().to_string();
        assert_eq!(
            e("/x/:add_common"),
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
