//! Generates the CRI v1 bindings from proto/api.proto with protox (pure Rust), so building keel
//! needs no `protoc`. Client and server are both generated, under the same module names as the
//! k8s-cri crate (`runtime_service_client`, `runtime_service_server`, ...). The encoded file
//! descriptor set (with source info, so reflection clients see the comments) goes to
//! `$OUT_DIR/runtime_v1_descriptor.bin` for gRPC server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(["proto/api.proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("runtime_v1_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
