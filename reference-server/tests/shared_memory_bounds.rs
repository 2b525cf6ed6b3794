//! What registered shared-memory regions cost the server, against the real
//! server binary and real POSIX shared memory: a region holds no descriptor
//! (a server allowed 256 registers 400 regions and still takes new
//! connections), maps only its own bytes (regions at the end of a sparse
//! 1 TiB object cost pages, not terabytes), and the bytes mapped for all
//! regions are capped (`--max-shared-memory-mb`, 1 TiB by default) and
//! given back when regions go.

mod common;

use std::io::{BufRead, BufReader, Lines};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};

use serde_json::json;
use serving_proto::pb::inference as pb;
use serving_proto::pb::inference::grpc_inference_service_client::GrpcInferenceServiceClient;

const TIB: u64 = 1 << 40;

/// The server binary, run with shared memory allowed, on ports of its own.
struct Server {
    child: Child,
    _stdout: Lines<BufReader<ChildStdout>>,
    grpc: String,
    rest: String,
}

impl Server {
    /// Starts the server with `args`, in a process allowed `nofile`
    /// descriptors when given.
    fn start(nofile: Option<u32>, args: &[&str]) -> Server {
        let binary = env!("CARGO_BIN_EXE_reference-server");
        let mut command = match nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.args([
                    "-c",
                    r#"ulimit -n "$0" && exec "$@""#,
                    &n.to_string(),
                    binary,
                ]);
                c
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args([
                "--grpc-address",
                "127.0.0.1:0",
                "--rest-address",
                "127.0.0.1:0",
                "--allow-shared-memory",
            ])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the server starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = loop {
            let line = lines.next().expect("a readiness line").unwrap();
            if let Some(rest) = line.strip_prefix("reference-server ready: gRPC ") {
                break rest.to_owned();
            }
        };
        let (grpc, rest) = ready.split_once(" REST ").unwrap();
        Server {
            grpc: grpc.to_owned(),
            rest: rest.to_owned(),
            child,
            _stdout: lines,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.rest)
    }

    async fn grpc(&self) -> GrpcInferenceServiceClient<tonic::transport::Channel> {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .expect("a new gRPC connection");
        GrpcInferenceServiceClient::new(channel)
    }

    /// The server's address space, bytes (`VmSize`).
    fn vm_size(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmSize:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .expect("VmSize");
        kb << 10
    }

    /// The bytes the server maps of `object`.
    fn mapped_of(&self, object: &Object) -> u64 {
        let path = object.path.to_str().unwrap();
        std::fs::read_to_string(format!("/proc/{}/maps", self.pid()))
            .unwrap()
            .lines()
            .filter(|l| l.contains(path))
            .map(|l| {
                let range = l.split_whitespace().next().unwrap();
                let (start, end) = range.split_once('-').unwrap();
                u64::from_str_radix(end, 16).unwrap() - u64::from_str_radix(start, 16).unwrap()
            })
            .sum()
    }

    /// The descriptors the server holds open.
    fn descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A POSIX shared memory object of this test, removed when dropped.
struct Object {
    key: String,
    path: PathBuf,
    file: std::fs::File,
}

impl Object {
    /// An object of `len` bytes (sparse: only what is written takes memory).
    fn new(what: &str, len: u64) -> Object {
        let name = format!("serving-bounds-{}-{what}", std::process::id());
        let path = PathBuf::from("/dev/shm").join(&name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(len).unwrap();
        Object {
            key: format!("/{name}"),
            path,
            file,
        }
    }

    fn write_f32s(&self, offset: u64, values: &[f32]) {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.file.write_all_at(&bytes, offset).unwrap();
    }

    fn read_f32s(&self, offset: u64, n: usize) -> Vec<f32> {
        let mut bytes = vec![0u8; n * 4];
        self.file.read_exact_at(&mut bytes, offset).unwrap();
        bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Registers region `name` over REST: the status and the body.
async fn register(
    http: &reqwest::Client,
    s: &Server,
    name: &str,
    key: &str,
    offset: u64,
    byte_size: u64,
) -> (u16, String) {
    let r = http
        .post(s.url(&format!("/v2/systemsharedmemory/region/{name}/register")))
        .json(&json!({"key": key, "offset": offset, "byte_size": byte_size}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn unregister_all(http: &reqwest::Client, s: &Server) {
    let r = http
        .post(s.url("/v2/systemsharedmemory/unregister"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Runs the demo's `add` with both inputs and the output in regions, over
/// REST.
async fn add_in_place(http: &reqwest::Client, s: &Server, x1: &str, x2: &str, y: &str) {
    let placed =
        |region: &str| json!({"shared_memory_region": region, "shared_memory_byte_size": 16});
    let body = json!({
        "inputs": [
            {"name": "x1", "shape": [2, 2], "datatype": "FP32", "parameters": placed(x1)},
            {"name": "x2", "shape": [2, 2], "datatype": "FP32", "parameters": placed(x2)},
        ],
        "outputs": [{"name": "y", "parameters": placed(y)}],
    });
    let r = http
        .post(s.url("/v2/models/add/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(status, 200, "{}", r.text().await.unwrap());
}

/// New connections on both ports are served.
async fn serves_new_connections(s: &Server) {
    for _ in 0..4 {
        let fresh = common::http();
        let r = fresh
            .get(s.url("/v2/health/ready"))
            .send()
            .await
            .expect("a new REST connection is served");
        assert_eq!(r.status(), 200);
        s.grpc()
            .await
            .server_live(pb::ServerLiveRequest {})
            .await
            .expect("a new gRPC connection is served");
    }
}

#[tokio::test]
async fn four_hundred_regions_hold_no_descriptors_in_a_server_allowed_256() {
    let object = Object::new("descriptors", 1 << 16);
    let s = Server::start(Some(256), &[]);
    let http = common::http();
    for i in 0..400u64 {
        let (status, text) = register(&http, &s, &format!("r{i}"), &object.key, i * 16, 16).await;
        assert_eq!(status, 200, "region {i}: {text}");
    }
    let open = s.descriptors();
    assert!(open < 128, "{open} descriptors open with 400 regions");
    serves_new_connections(&s).await;
    // The regions work without their descriptors.
    object.write_f32s(399 * 16, &[1.0, 2.0, 3.0, 4.0]);
    object.write_f32s(398 * 16, &[10.0, 20.0, 30.0, 40.0]);
    add_in_place(&http, &s, "r399", "r398", "r397").await;
    assert_eq!(object.read_f32s(397 * 16, 4), [11.0, 22.0, 33.0, 44.0]);
    let status: serde_json::Value = http
        .get(s.url("/v2/systemsharedmemory/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status.as_array().unwrap().len(), 400);
    unregister_all(&http, &s).await;
}

#[tokio::test]
async fn regions_of_a_sparse_terabyte_object_map_their_bytes_only() {
    let object = Object::new("sparse", TIB);
    let s = Server::start(None, &[]);
    let http = common::http();
    let before = s.vm_size();
    // Near the end of the object, at offsets off the page boundaries.
    let offset = |i: u64| TIB - (i + 1) * 8192 - 100;
    for i in 0..256 {
        let (status, text) =
            register(&http, &s, &format!("r{i}"), &object.key, offset(i), 4096).await;
        assert_eq!(status, 200, "region {i}: {text}");
    }
    let mapped = s.mapped_of(&object);
    assert!(
        (256 * 4096..=256 * 8192).contains(&mapped),
        "256 regions of 4096 bytes map {mapped} bytes"
    );
    let grown = s.vm_size().saturating_sub(before);
    assert!(grown < 8 << 30, "the address space grew by {grown} bytes");
    serves_new_connections(&s).await;
    // Read and written in place, each at its offset.
    object.write_f32s(offset(0), &[1.0, 2.0, 3.0, 4.0]);
    object.write_f32s(offset(1), &[10.0, 20.0, 30.0, 40.0]);
    add_in_place(&http, &s, "r0", "r1", "r2").await;
    assert_eq!(object.read_f32s(offset(2), 4), [11.0, 22.0, 33.0, 44.0]);
    unregister_all(&http, &s).await;
    // The mappings go with the regions (once the request's hold ends).
    for _ in 0..100 {
        if s.mapped_of(&object) == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(s.mapped_of(&object), 0);
}

#[tokio::test]
async fn whole_terabyte_regions_are_capped_by_their_bytes() {
    let object = Object::new("whole", TIB);
    let s = Server::start(None, &[]);
    let http = common::http();
    let before = s.vm_size();
    let (status, text) = register(&http, &s, "whole0", &object.key, 0, TIB).await;
    assert_eq!(status, 200, "{text}");
    // Without a cap each maps another TiB, and about 128 of them take all
    // of a 47-bit address space.
    for i in 1..200 {
        let (status, text) = register(&http, &s, &format!("whole{i}"), &object.key, 0, TIB).await;
        assert_eq!(status, 503, "region {i}: {text}");
        assert!(
            text.contains(&format!(
                "region 'whole{i}' of 1099511627776 bytes would bring the shared memory this server maps to 2199023255552 bytes, over its limit of 1099511627776 bytes (--max-shared-memory-mb); 1099511627776 bytes are mapped now: unregister some first"
            )),
            "{text}"
        );
    }
    // The cap counts bytes, not regions.
    let (status, text) = register(&http, &s, "small", &object.key, 0, 4096).await;
    assert_eq!(status, 503, "{text}");
    let e = s
        .grpc()
        .await
        .system_shared_memory_register(pb::SystemSharedMemoryRegisterRequest {
            name: "small".into(),
            key: object.key.clone(),
            offset: 0,
            byte_size: 4096,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(
        e.message()
            .contains("1099511631872 bytes, over its limit of 1099511627776 bytes"),
        "{e:?}"
    );
    let grown = s.vm_size().saturating_sub(before);
    assert!(
        (TIB..TIB + (8 << 30)).contains(&grown),
        "the address space grew by {grown} bytes"
    );
    serves_new_connections(&s).await;
    // Unregistering gives the bytes back.
    unregister_all(&http, &s).await;
    let (status, text) = register(&http, &s, "whole1", &object.key, 0, TIB).await;
    assert_eq!(status, 200, "{text}");
    unregister_all(&http, &s).await;
    assert_eq!(s.mapped_of(&object), 0);
}

#[tokio::test]
async fn the_cap_is_a_flag() {
    let object = Object::new("flag", 4 << 20);
    let s = Server::start(None, &["--max-shared-memory-mb", "1"]);
    let http = common::http();
    let (status, text) = register(&http, &s, "a", &object.key, 0, 768 << 10).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = register(&http, &s, "b", &object.key, 1 << 20, 512 << 10).await;
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains(
            "region 'b' of 524288 bytes would bring the shared memory this server maps to 1310720 bytes, over its limit of 1048576 bytes"
        ),
        "{text}"
    );
    // A region over the cap on its own never fits: a bad registration.
    let (status, text) = register(&http, &s, "c", &object.key, 0, 2 << 20).await;
    assert_eq!(status, 400, "{text}");
    let e = s
        .grpc()
        .await
        .system_shared_memory_register(pb::SystemSharedMemoryRegisterRequest {
            name: "c".into(),
            key: object.key.clone(),
            offset: 0,
            byte_size: 2 << 20,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains(
            "region 'c' of 2097152 bytes is larger than the 1048576 bytes this server maps for all regions (--max-shared-memory-mb)"
        ),
        "{e:?}"
    );
    let r = http
        .post(s.url("/v2/systemsharedmemory/region/a/unregister"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, text) = register(&http, &s, "b", &object.key, 1 << 20, 512 << 10).await;
    assert_eq!(status, 200, "{text}");
    unregister_all(&http, &s).await;

    let out = Command::new(env!("CARGO_BIN_EXE_reference-server"))
        .args(["--max-shared-memory-mb", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
