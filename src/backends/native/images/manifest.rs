//! The OCI / Docker v2 documents an image is made of (index, manifest, config), only the fields
//! keel reads, plus the platform choice from an index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// containerd refuses manifests bigger than this (`remotes/docker/resolver.go MaxManifestSize`).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1048 * 1048;

/// Errors reading image documents.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("failed to unmarshal {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported media type {0}")]
    MediaType(String),
    #[error("no match for platform in manifest: not found")]
    NoPlatform,
    #[error("invalid manifest: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// `config.config` of an image config (docker's capitalised field names).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunConfig {
    #[serde(rename = "User", default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(rename = "Env", default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_vec"
    )]
    pub entrypoint: Vec<String>,
    #[serde(
        rename = "Cmd",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_vec"
    )]
    pub cmd: Vec<String>,
    #[serde(rename = "WorkingDir", default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(rename = "StopSignal", default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(
        rename = "Labels",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_map"
    )]
    pub labels: BTreeMap<String, String>,
}

fn null_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

fn null_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

pub fn parse_index(bytes: &[u8]) -> Result<Index, ManifestError> {
    serde_json::from_slice(bytes).map_err(|source| ManifestError::Json { what: "index", source })
}

pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
        what: "manifest",
        source,
    })
}

pub fn parse_config(bytes: &[u8]) -> Result<ImageConfig, ManifestError> {
    serde_json::from_slice(bytes).map_err(|source| ManifestError::Json { what: "config", source })
}

/// Index or manifest? By media type, else by shape (`manifests` vs `config`).
pub fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    match media_type {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        _ => serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .is_some_and(|v| v.get("manifests").is_some()),
    }
}

/// The node's platform in OCI terms.
pub fn host_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    Platform {
        architecture: architecture.into(),
        os: "linux".into(),
        variant: (architecture == "arm64").then(|| "v8".to_string()),
    }
}

/// containerd's platform matcher, best first: exact, then what the host also runs (amd64 runs
/// 386; arm64 runs v8 with or without the variant).
fn platform_rank(want: &Platform, have: &Platform) -> Option<u8> {
    if have.os != want.os {
        return None;
    }
    if have.architecture == want.architecture {
        let same_variant = match (&want.variant, &have.variant) {
            (a, b) if a == b => true,
            (Some(v), None) | (None, Some(v)) => want.architecture == "arm64" && v == "v8",
            _ => false,
        };
        return same_variant.then_some(0);
    }
    (want.architecture == "amd64" && have.architecture == "386").then_some(1)
}

/// The manifest of an index for `want` (descriptors without a platform are skipped: they are
/// attestations and the like).
pub fn select_platform<'a>(index: &'a Index, want: &Platform) -> Result<&'a Descriptor, ManifestError> {
    index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref().and_then(|p| platform_rank(want, p)).map(|r| (r, d)))
        .min_by_key(|(r, _)| *r)
        .map(|(_, d)| d)
        .ok_or(ManifestError::NoPlatform)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>, n: u8) -> serde_json::Value {
        let mut p = serde_json::json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            p["variant"] = v.into();
        }
        serde_json::json!({"mediaType": OCI_MANIFEST, "digest": Digest::of(&[n]).to_string(), "size": 10, "platform": p})
    }

    #[test]
    fn platform_selection() {
        let idx = serde_json::json!({"manifests": [
            desc("arm", Some("v7"), 1), desc("arm64", Some("v8"), 2), desc("386", None, 3), desc("amd64", None, 4),
            {"mediaType": OCI_MANIFEST, "digest": Digest::of(b"att").to_string(), "size": 1}
        ]});
        let idx = parse_index(&serde_json::to_vec(&idx).unwrap()).unwrap();
        let amd64 = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        };
        assert_eq!(select_platform(&idx, &amd64).unwrap().digest, Digest::of(&[4]));
        let arm64 = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: None,
        };
        assert_eq!(select_platform(&idx, &arm64).unwrap().digest, Digest::of(&[2]));
        let only386 = Index {
            media_type: None,
            manifests: vec![idx.manifests[2].clone()],
        };
        assert_eq!(select_platform(&only386, &amd64).unwrap().digest, Digest::of(&[3]));
        let only_arm = Index {
            media_type: None,
            manifests: vec![idx.manifests[0].clone()],
        };
        let err = select_platform(&only_arm, &amd64).unwrap_err();
        assert_eq!(err.to_string(), "no match for platform in manifest: not found");
    }

    #[test]
    fn config_with_nulls() {
        let c = parse_config(
            br#"{"architecture":"amd64","os":"linux","config":{"User":"1000:1000","Cmd":null,"Entrypoint":["/bin/sh"],"Env":["PATH=/bin"],"WorkingDir":"/w","Labels":null},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        let rc = c.config.unwrap();
        assert_eq!(rc.user, "1000:1000");
        assert!(rc.cmd.is_empty());
        assert_eq!(rc.entrypoint, vec!["/bin/sh"]);
        assert_eq!(rc.working_dir, "/w");
        assert!(is_index("", br#"{"manifests":[]}"#));
        assert!(!is_index("", br#"{"config":{}}"#));
    }
}
