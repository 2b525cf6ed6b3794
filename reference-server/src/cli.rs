//! What the command line means beyond its own flags: when the server is
//! started as Triton is (Triton's flags, or under the name `tritonserver`),
//! Triton's defaults; and the log level from Triton's `--log-*` flags or
//! MindSpore Serving's `GLOG_v` / `MS_SUBMODULE_LOG_v`, when `RUST_LOG` does
//! not give one.

use std::net::SocketAddr;

/// Triton's flags for its repository and listeners: one of them on the
/// command line (or the name `tritonserver`) makes the server take
/// Triton's defaults (its ports on every interface, model control
/// `none`). Its other flags (`--log-*`, `--model-control-mode`, ...) are
/// taken without changing the defaults.
pub const TRITON_STYLE_FLAGS: &[&str] = &[
    "--model-store",
    "--http-port",
    "--grpc-port",
    "--metrics-port",
    "--allow-http",
    "--allow-grpc",
    "--allow-metrics",
];

/// Triton's default ports: HTTP, gRPC, metrics.
pub const TRITON_PORTS: (u16, u16, u16) = (8000, 8001, 8002);

/// Whether a command line starts the server as Triton is: the program is
/// named `tritonserver`, or a flag only Triton has is given (`--flag` or
/// `--flag=value`).
pub fn triton_style(args: &[String]) -> bool {
    let named = args.first().is_some_and(|a| {
        std::path::Path::new(a)
            .file_name()
            .is_some_and(|n| n == "tritonserver")
    });
    named
        || args.iter().skip(1).any(|a| {
            let flag = a.split('=').next().unwrap_or(a);
            TRITON_STYLE_FLAGS.contains(&flag)
        })
}

/// Where a listener goes: the address given, else `port` on every
/// interface (Triton's `--http-port` and its defaults), else this
/// server's own default.
pub fn listen(
    given: Option<SocketAddr>,
    port: Option<u16>,
    triton: bool,
    triton_port: u16,
    own: SocketAddr,
) -> SocketAddr {
    match (given, port) {
        (Some(address), None) => address,
        (Some(address), Some(port)) => SocketAddr::new(address.ip(), port),
        (None, Some(port)) => SocketAddr::from(([0, 0, 0, 0], port)),
        (None, None) if triton => SocketAddr::from(([0, 0, 0, 0], triton_port)),
        (None, None) => own,
    }
}

/// The log filter of Triton's log flags: `--log-verbose N` (above 0:
/// debug), then `--log-info`, `--log-warning`, `--log-error` (each on by
/// default; the most detailed one on wins).
pub fn triton_log_filter(verbose: u32, info: bool, warning: bool, error: bool) -> &'static str {
    if verbose > 0 {
        "debug,ort=warn"
    } else if info {
        "info,ort=warn"
    } else if warning {
        "warn"
    } else if error {
        "error"
    } else {
        "off"
    }
}

/// The log filter MindSpore Serving's environment asks for:
/// `MS_SUBMODULE_LOG_v="{SERVING:1}"` for the serving module, else
/// `GLOG_v` (0 debug, 1 info, 2 warning, 3 error); `None` when neither
/// gives a level.
pub fn mindspore_log_filter(glog_v: Option<&str>, submodule: Option<&str>) -> Option<&'static str> {
    let level = |v: &str| match v.trim() {
        "0" => Some("debug,ort=warn"),
        "1" => Some("info,ort=warn"),
        "2" => Some("warn"),
        "3" => Some("error"),
        _ => None,
    };
    let serving = submodule.and_then(|s| {
        s.trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .filter_map(|pair| pair.split_once(':'))
            .find(|(module, _)| module.trim() == "SERVING")
            .and_then(|(_, v)| level(v))
    });
    serving.or_else(|| glog_v.and_then(level))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn tritons_flags_or_name_take_tritons_defaults() {
        assert!(triton_style(&args(&["/usr/bin/tritonserver"])));
        assert!(triton_style(&args(&[
            "reference-server",
            "--http-port=8080"
        ])));
        assert!(triton_style(&args(&[
            "reference-server",
            "--model-store",
            "/m"
        ])));
        assert!(!triton_style(&args(&[
            "reference-server",
            "--model-repository",
            "/m"
        ])));
        let own = SocketAddr::from(([127, 0, 0, 1], 1500));
        assert_eq!(listen(None, None, false, 8000, own), own);
        assert_eq!(
            listen(None, None, true, 8000, own),
            "0.0.0.0:8000".parse().unwrap()
        );
        assert_eq!(
            listen(None, Some(8080), false, 8000, own),
            "0.0.0.0:8080".parse().unwrap()
        );
        let given = SocketAddr::from(([127, 0, 0, 1], 9));
        assert_eq!(
            listen(Some(given), Some(7), true, 8000, own),
            "127.0.0.1:7".parse().unwrap()
        );
    }

    #[test]
    fn log_levels_from_triton_and_mindspore() {
        assert_eq!(triton_log_filter(1, true, true, true), "debug,ort=warn");
        assert_eq!(triton_log_filter(0, false, true, true), "warn");
        assert_eq!(triton_log_filter(0, false, false, false), "off");
        assert_eq!(mindspore_log_filter(Some("3"), None), Some("error"));
        assert_eq!(
            mindspore_log_filter(Some("3"), Some("{SERVING:0,ME:2}")),
            Some("debug,ort=warn")
        );
        assert_eq!(mindspore_log_filter(None, Some("{ME:2}")), None);
        assert_eq!(mindspore_log_filter(Some("x"), None), None);
    }
}
