//! Generates the CRI v1 bindings from proto/api.proto with protox (pure Rust), so building keel
//! needs no `protoc`. Client and server are both generated, under the same module names as the
//! k8s-cri crate (`runtime_service_client`, `runtime_service_server`, ...).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    let fds = protox::compile(["proto/api.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .compile_fds(fds)?;
    Ok(())
}
