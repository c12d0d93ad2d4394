//! The Summary API types (`k8s.io/kubelet/pkg/apis/stats/v1alpha1`), serialized exactly as the
//! kubelet emits them (kubelet-api-protocols.md §4.2): camelCase names with the few exceptions
//! (`ephemeral-storage`, `process_stats`, `maxpid`), pointer/slice fields omitted when unset,
//! times as second-precision UTC or `null`.
//!
//! Times keep full precision in memory: `/metrics/resource` uses millisecond timestamps.

use serde::{Deserialize, Serialize};

/// `metav1.Time`: `None` is the zero time (`null`).
pub type Time = Option<jiff::Timestamp>;

/// Serde for [`Time`]: RFC 3339 with second precision, always `Z`; the zero time is `null`.
pub mod time_secs {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &super::Time, s: S) -> Result<S::Ok, S::Error> {
        match t {
            // metav1.Time marshals with time.RFC3339 after truncation to seconds.
            Some(t) => s.serialize_str(&format_secs(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<super::Time, D::Error> {
        let v: Option<String> = Option::deserialize(d)?;
        match v {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }

    /// `2024-05-01T12:00:00Z`: truncated (not rounded) to the second, like Go's formatting.
    pub fn format_secs(t: jiff::Timestamp) -> String {
        let secs = t.as_second();
        let t = jiff::Timestamp::from_second(secs).unwrap_or(t);
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }
}

/// The whole summary. `pods` is `null` when there are none (Go nil slice).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Option<Vec<PodStats>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_containers: Option<Vec<ContainerStats>>,
    #[serde(with = "time_secs")]
    pub start_time: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit: Option<RlimitStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RlimitStats {
    #[serde(with = "time_secs")]
    pub time: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxpid: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curproc: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_fs: Option<FsStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_fs: Option<FsStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    #[serde(with = "time_secs")]
    pub start_time: Time,
    pub containers: Option<Vec<ContainerStats>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    #[serde(default, rename = "volume", skip_serializing_if = "Option::is_none")]
    pub volume: Option<Vec<VolumeStats>>,
    #[serde(default, rename = "ephemeral-storage", skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<FsStats>,
    #[serde(default, rename = "process_stats", skip_serializing_if = "Option::is_none")]
    pub process_stats: Option<ProcessStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessStats {
    #[serde(default, rename = "process_count", skip_serializing_if = "Option::is_none")]
    pub process_count: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    #[serde(with = "time_secs")]
    pub start_time: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<FsStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<FsStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    #[serde(with = "time_secs")]
    pub time: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    #[serde(with = "time_secs")]
    pub time: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_faults: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_page_faults: Option<u64>,
}

/// One interface's counters (`InterfaceStats`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStats {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_errors: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_errors: Option<u64>,
}

/// Network counters: the default interface (`eth0`) inlined, then every interface.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkStats {
    #[serde(with = "time_secs")]
    pub time: Time,
    #[serde(flatten)]
    pub default: InterfaceStats,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<InterfaceStats>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    #[serde(with = "time_secs")]
    pub time: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes_free: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes_used: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PvcReference {
    pub name: String,
    pub namespace: String,
}

/// A volume's usage: the FsStats fields inlined, then its name and claim.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStats {
    #[serde(flatten)]
    pub fs: FsStats,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc_ref: Option<PvcReference>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Some(s.parse().unwrap())
    }

    /// The reference sample built with the real Go types
    /// (artifacts/summary-and-metrics-samples.txt), rebuilt here field by field.
    pub(crate) fn reference_summary() -> Summary {
        let noon = t("2024-05-01T12:00:00Z");
        let eleven = t("2024-05-01T11:00:00Z");
        let eth0 = InterfaceStats {
            name: "eth0".into(),
            rx_bytes: Some(100),
            rx_errors: Some(0),
            tx_bytes: Some(200),
            tx_errors: Some(0),
        };
        Summary {
            node: NodeStats {
                node_name: "node-a".into(),
                start_time: eleven,
                cpu: Some(CpuStats {
                    time: noon,
                    usage_nano_cores: Some(250_000_000),
                    usage_core_nano_seconds: Some(123_456_789_000),
                }),
                memory: Some(MemoryStats {
                    time: noon,
                    available_bytes: Some(1 << 30),
                    usage_bytes: Some(3 << 30),
                    working_set_bytes: Some(2 << 30),
                    rss_bytes: Some(512 << 20),
                    page_faults: Some(10),
                    major_page_faults: Some(1),
                }),
                network: Some(NetworkStats {
                    time: noon,
                    default: eth0.clone(),
                    interfaces: Some(vec![eth0]),
                }),
                fs: Some(FsStats {
                    time: noon,
                    available_bytes: Some(10),
                    capacity_bytes: Some(20),
                    used_bytes: Some(10),
                    inodes_free: Some(5),
                    inodes: Some(9),
                    inodes_used: Some(4),
                }),
                runtime: Some(RuntimeStats {
                    image_fs: Some(FsStats {
                        time: noon,
                        used_bytes: Some(7),
                        ..Default::default()
                    }),
                    container_fs: None,
                }),
                ..Default::default()
            },
            pods: Some(vec![PodStats {
                pod_ref: PodReference {
                    name: "web".into(),
                    namespace: "default".into(),
                    uid: "1111-2222".into(),
                },
                start_time: eleven,
                containers: Some(vec![ContainerStats {
                    name: "nginx".into(),
                    start_time: eleven,
                    cpu: Some(CpuStats {
                        time: noon,
                        usage_nano_cores: Some(1_000_000),
                        usage_core_nano_seconds: Some(5_000_000_000),
                    }),
                    memory: Some(MemoryStats {
                        time: noon,
                        usage_bytes: Some(20 << 20),
                        working_set_bytes: Some(10 << 20),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                cpu: Some(CpuStats {
                    time: noon,
                    usage_nano_cores: Some(1_000_000),
                    usage_core_nano_seconds: Some(5_100_000_000),
                }),
                memory: Some(MemoryStats {
                    time: noon,
                    working_set_bytes: Some(11 << 20),
                    ..Default::default()
                }),
                volume: Some(vec![VolumeStats {
                    fs: FsStats {
                        time: noon,
                        used_bytes: Some(4096),
                        ..Default::default()
                    },
                    name: Some("data".into()),
                    pvc_ref: Some(PvcReference {
                        name: "pvc1".into(),
                        namespace: "default".into(),
                    }),
                }]),
                ephemeral_storage: Some(FsStats {
                    time: noon,
                    used_bytes: Some(8192),
                    ..Default::default()
                }),
                process_stats: Some(ProcessStats { process_count: Some(3) }),
                network: None,
            }]),
        }
    }

    pub(crate) const REFERENCE_JSON: &str = r#"{"node":{"nodeName":"node-a","startTime":"2024-05-01T11:00:00Z","cpu":{"time":"2024-05-01T12:00:00Z","usageNanoCores":250000000,"usageCoreNanoSeconds":123456789000},"memory":{"time":"2024-05-01T12:00:00Z","availableBytes":1073741824,"usageBytes":3221225472,"workingSetBytes":2147483648,"rssBytes":536870912,"pageFaults":10,"majorPageFaults":1},"network":{"time":"2024-05-01T12:00:00Z","name":"eth0","rxBytes":100,"rxErrors":0,"txBytes":200,"txErrors":0,"interfaces":[{"name":"eth0","rxBytes":100,"rxErrors":0,"txBytes":200,"txErrors":0}]},"fs":{"time":"2024-05-01T12:00:00Z","availableBytes":10,"capacityBytes":20,"usedBytes":10,"inodesFree":5,"inodes":9,"inodesUsed":4},"runtime":{"imageFs":{"time":"2024-05-01T12:00:00Z","usedBytes":7}}},"pods":[{"podRef":{"name":"web","namespace":"default","uid":"1111-2222"},"startTime":"2024-05-01T11:00:00Z","containers":[{"name":"nginx","startTime":"2024-05-01T11:00:00Z","cpu":{"time":"2024-05-01T12:00:00Z","usageNanoCores":1000000,"usageCoreNanoSeconds":5000000000},"memory":{"time":"2024-05-01T12:00:00Z","usageBytes":20971520,"workingSetBytes":10485760}}],"cpu":{"time":"2024-05-01T12:00:00Z","usageNanoCores":1000000,"usageCoreNanoSeconds":5100000000},"memory":{"time":"2024-05-01T12:00:00Z","workingSetBytes":11534336},"volume":[{"time":"2024-05-01T12:00:00Z","usedBytes":4096,"name":"data","pvcRef":{"name":"pvc1","namespace":"default"}}],"ephemeral-storage":{"time":"2024-05-01T12:00:00Z","usedBytes":8192},"process_stats":{"process_count":3}}]}"#;

    #[test]
    fn serializes_byte_for_byte_like_the_go_types() {
        assert_eq!(serde_json::to_string(&reference_summary()).unwrap(), REFERENCE_JSON);
    }

    #[test]
    fn round_trips_the_reference_sample() {
        let parsed: Summary = serde_json::from_str(REFERENCE_JSON).unwrap();
        assert_eq!(parsed, reference_summary());
    }

    #[test]
    fn empty_summary_has_null_pods_and_start_time() {
        let s = Summary {
            node: NodeStats {
                node_name: "n".into(),
                ..Default::default()
            },
            pods: None,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"node":{"nodeName":"n","startTime":null},"pods":null}"#
        );
    }

    #[test]
    fn times_are_truncated_to_the_second_in_utc() {
        let ts: jiff::Timestamp = "2024-05-01T12:00:00.999999999+02:00".parse().unwrap();
        assert_eq!(time_secs::format_secs(ts), "2024-05-01T10:00:00Z");
        let c = CpuStats {
            time: Some(ts),
            ..Default::default()
        };
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"time":"2024-05-01T10:00:00Z"}"#);
    }

    #[test]
    fn container_without_data_keeps_name_and_null_start() {
        let c = PodStats::default();
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"podRef":{"name":"","namespace":"","uid":""},"startTime":null,"containers":null}"#
        );
    }
}
