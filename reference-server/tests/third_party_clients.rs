//! Wire compatibility with clients no one here wrote: NVIDIA's tritonclient
//! (HTTP and gRPC), grpcio with stubs generated from our ms_service.proto by
//! grpcio-tools, requests, and grpcio-health-checking. The test provisions
//! them into a virtual environment under the target directory (pinned in
//! tests/compat/requirements.txt) and runs tests/compat/third_party_clients.py
//! against a real server.

mod common;

#[tokio::test]
async fn third_party_clients_interoperate() {
    let server = common::demo().await;
    let args = common::compat_args(&server);
    common::run_compat(
        "third_party_clients.py",
        args,
        "all third-party clients agree",
    )
    .await;
    server.shutdown().await;
}
