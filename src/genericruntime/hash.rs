//! Container spec hash (§1.3): detects a changed container definition so the running instance is
//! killed and recreated, and keys crash-loop back-off per definition.
//!
//! keel hashes with FNV-1a 32-bit over the canonical JSON rendering of the k8s-openapi
//! `Container` (serde field order, absent optionals skipped). This is deliberately *not*
//! bit-compatible with the Go kubelet (which feeds a go-spew dump of Go's JSON into the hash):
//! keel never adopts containers a Go kubelet created, so a stable hash of the full spec is all the
//! behaviour needs. Env values resolved at runtime are not part of the spec, so changing a
//! ConfigMap never restarts a container.

use k8s_openapi::api::core::v1::Container;

const FNV32_OFFSET: u32 = 0x811c_9dc5;
const FNV32_PRIME: u32 = 0x0100_0193;

/// FNV-1a 32-bit of a byte string.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(FNV32_OFFSET, |h, b| (h ^ u32::from(*b)).wrapping_mul(FNV32_PRIME))
}

/// The hash of a container spec, widened to u64 like the kubelet's.
pub fn hash_container(container: &Container) -> u64 {
    // Serializing a plain data struct into a Vec cannot fail; an empty rendering would still give
    // a stable (if useless) hash rather than a panic.
    let json = serde_json::to_vec(container).unwrap_or_default();
    u64::from(fnv1a32(&json))
}

/// The annotation form: lower-case hex, no prefix (`311670a`).
pub fn hash_hex(hash: u64) -> String {
    format!("{hash:x}")
}

/// Parses the annotation form back (base-16).
pub fn parse_hash_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, EnvVar, ResourceRequirements};

    fn sample() -> Container {
        serde_json::from_value(serde_json::json!({
            "name": "test_container",
            "image": "foo/image:v1",
            "command": ["/bin/testcmd"],
            "args": ["/bin/sh", "-c", "echo abc"],
            "ports": [{"containerPort": 8001}],
            "env": [{"name": "ENV_FOO", "value": "bar"},
                    {"name": "ENV_BAR", "valueFrom": {"secretKeyRef": {"name": "foo", "key": "bar", "optional": true}}}],
            "resources": {"limits": {"foo": "1G"}, "requests": {"foo": "500M"}}
        }))
        .unwrap()
    }

    #[test]
    fn fnv_reference_vectors() {
        // Published FNV-1a 32 test vectors.
        assert_eq!(fnv1a32(b""), 0x811c9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9cf968);
    }

    #[test]
    fn stable_for_equal_specs_and_fits_32_bits() {
        let a = hash_container(&sample());
        assert_eq!(a, hash_container(&sample().clone()));
        assert!(a <= u64::from(u32::MAX));
        assert_eq!(parse_hash_hex(&hash_hex(a)), Some(a));
        assert_eq!(hash_hex(0x311670a), "311670a");
    }

    #[test]
    fn any_spec_change_changes_the_hash() {
        let base = hash_container(&sample());
        let mut c = sample();
        c.image = Some("foo/image:v2".into());
        assert_ne!(hash_container(&c), base);
        let mut c = sample();
        c.env.as_mut().unwrap().push(EnvVar {
            name: "X".into(),
            value: Some("1".into()),
            ..Default::default()
        });
        assert_ne!(hash_container(&c), base);
        let mut c = sample();
        c.ports = Some(vec![ContainerPort {
            container_port: 8002,
            ..Default::default()
        }]);
        assert_ne!(hash_container(&c), base);
        let mut c = sample();
        c.resources = Some(ResourceRequirements::default());
        assert_ne!(hash_container(&c), base);
    }
}
